from pathlib import Path

import pytest

from gateway.settings import Settings, SettingsError, parse_duration, parse_size


def test_defaults():
    settings = Settings.load(environ={})
    assert settings.database_url is None
    assert settings.data_dir == Path("./.gateway")
    assert settings.max_body_bytes == 1024**3
    assert settings.max_field_bytes == 64 * 1024
    assert settings.max_attributes == 1000
    assert settings.sync_export_max_rows == 100_000
    assert settings.replace_session_ttl == 24 * 3600
    assert settings.export_ttl == 7 * 86400
    assert settings.log_level == "INFO"


def test_environment_then_flags():
    environ = {"GATEWAY_DATABASE_URL": "postgresql://env/db", "GATEWAY_MAX_BODY_BYTES": "2MiB",
               "GATEWAY_LOG_LEVEL": "debug"}
    settings = Settings.load(environ=environ, database_url="postgresql://flag/db")
    assert settings.database_url == "postgresql://flag/db"
    assert settings.max_body_bytes == 2 * 1024**2
    assert settings.log_level == "DEBUG"
    assert Settings.load(environ=environ, database_url=None).database_url == "postgresql://env/db"


@pytest.mark.parametrize("variable, value", [
    ("GATEWAY_MAX_BODY_BYTES", "big"), ("GATEWAY_EXPORT_TTL", "1 week"), ("GATEWAY_POOL_MAX_SIZE", "0"),
    ("GATEWAY_SYNC_EXPORT_MAX_ROWS", "ten"), ("GATEWAY_LOG_LEVEL", "CHATTY"), ("GATEWAY_MAX_ATTRIBUTES", "0"),
    ("GATEWAY_MAX_ATTRIBUTES", "1600"),
])
def test_bad_values_name_the_variable(variable, value):
    with pytest.raises(SettingsError, match=variable):
        Settings.load(environ={variable: value})


@pytest.mark.parametrize("text, seconds", [("90", 90), ("90s", 90), ("15m", 900), ("24h", 86400), ("7d", 604800)])
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text, size", [("65536", 65536), ("64KiB", 65536), ("1GiB", 1024**3), ("1g", 1024**3),
                                        ("5MB", 5_000_000)])
def test_sizes(text, size):
    assert parse_size(text) == size


def test_auth_failure_throttle_settings():
    settings = Settings.load(environ={})
    assert (settings.auth_failure_limit, settings.auth_failure_window) == (20, 60)
    settings = Settings.load(environ={"GATEWAY_AUTH_FAILURE_LIMIT": "0", "GATEWAY_AUTH_FAILURE_WINDOW": "10s"})
    assert (settings.auth_failure_limit, settings.auth_failure_window) == (0, 10)
    with pytest.raises(SettingsError, match="GATEWAY_AUTH_FAILURE_LIMIT"):
        Settings.load(environ={"GATEWAY_AUTH_FAILURE_LIMIT": "-1"})


def test_gateway_api_key_is_empty_or_32_characters_at_least():
    assert Settings.load(environ={}).api_key is None
    assert Settings.load(environ={"GATEWAY_API_KEY": ""}).api_key is None
    assert Settings.load(environ={"GATEWAY_API_KEY": "k" * 32}).api_key == "k" * 32
    with pytest.raises(SettingsError, match="GATEWAY_API_KEY is not valid: it has 31 characters") as raised:
        Settings.load(environ={"GATEWAY_API_KEY": "s" * 31})
    assert "s" * 31 not in str(raised.value)  # a secret is not repeated


def test_rejects_max_per_endpoint():
    assert Settings.load(environ={}).rejects_max_per_endpoint == 10_000_000
    assert Settings.load(environ={"GATEWAY_REJECTS_MAX_PER_ENDPOINT": "0"}).rejects_max_per_endpoint == 0
    with pytest.raises(SettingsError, match="GATEWAY_REJECTS_MAX_PER_ENDPOINT"):
        Settings.load(environ={"GATEWAY_REJECTS_MAX_PER_ENDPOINT": "-1"})


def test_slow_client_settings():
    settings = Settings.load(environ={})
    assert (settings.client_idle_timeout, settings.control_pool_size, settings.data_slot_wait) == (60, 3, 10)
    assert settings.data_slot_count == 10 - 2 - 1  # the pool minus a connection per export worker, minus one
    assert Settings.load(environ={"GATEWAY_POOL_MAX_SIZE": "2"}).data_slot_count == 1  # never none
    assert Settings.load(environ={"GATEWAY_DATA_SLOTS": "4"}).data_slot_count == 4
    with pytest.raises(SettingsError, match="GATEWAY_CLIENT_IDLE_TIMEOUT"):
        Settings.load(environ={"GATEWAY_CLIENT_IDLE_TIMEOUT": "0"})
