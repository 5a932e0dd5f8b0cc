"""API keys, the key cache, the failed-authentication throttle, scopes."""
