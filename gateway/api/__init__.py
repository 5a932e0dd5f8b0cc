"""HTTP handlers, one module per group of routes. Handlers parse and answer; the work is elsewhere."""
