"""All configuration, read once from the environment; CLI flags override.

Every setting has one row in ``SETTINGS`` (name, default, parser, help); the README's settings table
is generated from the same rows, so the code and the documentation cannot drift apart.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

_DURATION = re.compile(r"^\s*(\d+)\s*(ms|s|m|h|d)?\s*$")
_DURATION_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, None: 1}
_SIZE = re.compile(r"^\s*(\d+)\s*(b|kib|mib|gib|kb|mb|gb|k|m|g)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {
    "b": 1, "k": 1024, "kb": 1000, "kib": 1024, "m": 1024**2, "mb": 1000**2, "mib": 1024**2,
    "g": 1024**3, "gb": 1000**3, "gib": 1024**3, None: 1,
}
_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
API_KEY_MIN_LENGTH = 32


class SettingsError(ValueError):
    """A setting has a value we cannot use; the message names the variable."""


def parse_duration(text: str) -> float:
    """Seconds from '90', '90s', '15m', '24h', '7d'."""
    match = _DURATION.match(text)
    if not match:
        raise ValueError("expected a duration such as 30s, 15m, 24h or 7d")
    return int(match.group(1)) * _DURATION_UNITS[match.group(2)]


def parse_size(text: str) -> int:
    """Bytes from '1048576', '64KiB', '1GiB', '1g'."""
    match = _SIZE.match(text)
    if not match:
        raise ValueError("expected a size such as 65536, 64KiB or 1GiB")
    unit = match.group(2).lower() if match.group(2) else None
    return int(match.group(1)) * _SIZE_UNITS[unit]


def parse_positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise ValueError("expected a positive integer")
    return value


MAX_ATTRIBUTES_CEILING = 1599  # an upload's table has one column per CSV column plus its line; PostgreSQL: 1,600


def parse_max_attributes(text: str) -> int:
    value = parse_positive_int(text)
    if value > MAX_ATTRIBUTES_CEILING:
        raise ValueError(f"expected at most {MAX_ATTRIBUTES_CEILING} (PostgreSQL's 1,600 columns per table)")
    return value


def parse_non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise ValueError("expected 0 or a positive integer")
    return value


def parse_positive_duration(text: str) -> float:
    value = parse_duration(text)
    if value <= 0:
        raise ValueError("expected a duration above zero, such as 500ms or 60s")
    return value


def parse_log_level(text: str) -> str:
    level = text.strip().upper()
    if level not in _LOG_LEVELS:
        raise ValueError(f"expected one of {', '.join(_LOG_LEVELS)}")
    return level


def parse_optional_text(text: str) -> str | None:
    return text or None


def parse_api_key(text: str) -> str | None:
    """Empty (a key is generated at first start) or at least 32 characters: keys are stored as a plain
    SHA-256 (gateway.auth.keys), which is only right for keys nobody can guess."""
    if not text:
        return None
    if len(text) < API_KEY_MIN_LENGTH:
        raise ValueError(f"it has {len(text)} characters, at least {API_KEY_MIN_LENGTH} are needed (e.g. "
                         "python3 -c 'import secrets; print(secrets.token_urlsafe(32))'), or leave it empty "
                         "to have a key generated")
    return text


def parse_optional_path(text: str) -> Path | None:
    return Path(text) if text else None


def parse_bool(text: str) -> bool:
    value = text.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("", "0", "false", "no", "off"):
        return False
    raise ValueError("expected true or false")


@dataclasses.dataclass(frozen=True)
class Setting:
    field: str
    env: str
    default: str
    parse: Callable[[str], Any]
    help: str
    secret: bool = False  # its value is never repeated in an error message


SETTINGS: tuple[Setting, ...] = (
    Setting("database_url", "GATEWAY_DATABASE_URL", "", parse_optional_text,
            "External PostgreSQL (15 or newer). Empty: start the embedded PostgreSQL in the data dir."),
    Setting("data_dir", "GATEWAY_DATA_DIR", "./.gateway", Path,
            "Where the embedded PostgreSQL keeps its data (and, by default, export files)."),
    Setting("api_key", "GATEWAY_API_KEY", "", parse_api_key,
            "If set (at least 32 characters, else `serve` refuses to start), this key exists with admin scope on "
            "the `default` endpoint once the server is ready; starting with another value revokes the key the "
            "earlier value made. Empty: the first start generates a key and prints it once.", secret=True),
    Setting("auth_failure_limit", "GATEWAY_AUTH_FAILURE_LIMIT", "20", parse_non_negative_int,
            "Failed authentications (401) from one client address within `GATEWAY_AUTH_FAILURE_WINDOW` "
            "after which its `/v1` calls get 429 until the window frees; counted per process; 0 turns it off."),
    Setting("auth_failure_window", "GATEWAY_AUTH_FAILURE_WINDOW", "1m", parse_duration,
            "The sliding window of `GATEWAY_AUTH_FAILURE_LIMIT`."),
    Setting("max_body_bytes", "GATEWAY_MAX_BODY_BYTES", "1GiB", parse_size,
            "Largest data upload (after gzip is undone); larger → 413, nothing applied."),
    Setting("max_field_bytes", "GATEWAY_MAX_FIELD_BYTES", "64KiB", parse_size,
            "Largest CSV field; a row with a larger one is counted invalid."),
    Setting("add_read_ahead_bytes", "GATEWAY_ADD_READ_AHEAD_BYTES", "4MiB", parse_size,
            "An ADD body (after gzip is undone) up to this size is read into memory before its segment is locked, "
            "then COPYed straight into the members (a batch of new identities then costs about what psql's COPY "
            "does); a larger one streams through a temporary table. Memory: up to this much per data slot. "
            "0: every ADD streams."),
    Setting("max_attributes", "GATEWAY_MAX_ATTRIBUTES", "1000", parse_max_attributes,
            "Most columns in an upload's header and most attributes a segment gets (at most 1599); a header "
            "over it, or one that would take its segment past it → 400, nothing applied."),
    Setting("sync_export_max_rows", "GATEWAY_SYNC_EXPORT_MAX_ROWS", "100000", parse_positive_int,
            "Largest audience served directly by GET /v1/segments/{id}/data; larger → 501 (use a job)."),
    Setting("replace_session_ttl", "GATEWAY_REPLACE_SESSION_TTL", "24h", parse_duration,
            "An open REPLACE session with no new batch for this long expires; its staged rows are purged."),
    Setting("export_ttl", "GATEWAY_EXPORT_TTL", "7d", parse_duration,
            "How long an export job's data stays downloadable (then 410)."),
    Setting("export_dir", "GATEWAY_EXPORT_DIR", "", parse_optional_path,
            "Where export jobs to files (`/api/export/jobs`) and `/v1` export jobs write their files. Empty: `exports` inside "
            "`GATEWAY_DATA_DIR`. Every gateway process on this database must see the same directory (one host, "
            "or a shared volume)."),
    Setting("preview_ttl", "GATEWAY_PREVIEW_TTL", "1h", parse_positive_duration,
            "A preview (`/api/preview`) can be read this long after it was created, then it is answered 404."),
    Setting("estimate_exact_ms", "GATEWAY_ESTIMATE_EXACT_MS", "300", parse_non_negative_int,
            "An estimate (`/api/estimate/{previewId}`) is an exact count when that count finishes within this "
            "many milliseconds; otherwise it is computed from a sample, with its standard error and 95 % "
            "interval. 0: always sample (unless the sources have no more rows than the sample)."),
    Setting("estimate_sample_rows", "GATEWAY_ESTIMATE_SAMPLE_ROWS", "100000", parse_positive_int,
            "About how many source rows a sampled estimate reads (its sampling fraction is this over the "
            "sources' rows); its standard error shrinks as the square root of it."),
    Setting("rejects_ttl", "GATEWAY_REJECTS_TTL", "7d", parse_duration,
            "How long the rejected rows of an upload stay readable at `/api/segments/{id}/rejects` (then 410)."),
    Setting("rejects_max_per_segment", "GATEWAY_REJECTS_MAX_PER_SEGMENT", "1000000", parse_non_negative_int,
            "Most rejected rows stored per segment (over its uploads within `GATEWAY_REJECTS_TTL`); beyond it "
            "uploads only count them (`rejectsNotStored` in the upload history)."),
    Setting("rejects_max_per_endpoint", "GATEWAY_REJECTS_MAX_PER_ENDPOINT", "10000000", parse_non_negative_int,
            "Most rejected rows stored per endpoint (over all its segments' uploads within "
            "`GATEWAY_REJECTS_TTL`), so that a write key creating segment after segment cannot fill the disk; "
            "beyond it uploads only count them, as above."),
    Setting("upload_history_ttl", "GATEWAY_UPLOAD_HISTORY_TTL", "90d", parse_duration,
            "How long the upload history (`/api/segments/{id}/uploads`) keeps an upload."),
    Setting("delete_grace", "GATEWAY_DELETE_GRACE", "7d", parse_duration,
            "A deleted segment keeps its members this long (it can be restored meanwhile), then they are "
            "purged; `DELETE /api/segments/{id}?purge=true` purges at once."),
    Setting("export_workers", "GATEWAY_EXPORT_WORKERS", "2", parse_positive_int,
            "Export jobs one gateway process runs at once."),
    Setting("job_lease", "GATEWAY_JOB_LEASE", "30s", parse_duration,
            "A running job's lease; a job whose worker stopped renewing it is taken again after this."),
    Setting("pool_max_size", "GATEWAY_POOL_MAX_SIZE", "10", parse_positive_int,
            "Most PostgreSQL connections of one gateway process's main pool (uploads, downloads, export jobs, "
            "writes); the control pool (`GATEWAY_CONTROL_POOL_SIZE`) and the LISTEN connections come on top."),
    Setting("control_pool_size", "GATEWAY_CONTROL_POOL_SIZE", "3", parse_positive_int,
            "PostgreSQL connections of a second, small pool kept for short control queries (key lookups, "
            "`/readyz`, segment listing and metadata reads), so that busy uploads and downloads never starve them."),
    Setting("data_slots", "GATEWAY_DATA_SLOTS", "0", parse_non_negative_int,
            "Uploads and downloads that may hold a connection of the main pool at once (the rest wait "
            "`GATEWAY_DATA_SLOT_WAIT`, then get 503 `server_busy` with `Retry-After`). 0: "
            "`GATEWAY_POOL_MAX_SIZE` minus `GATEWAY_EXPORT_WORKERS` minus 1, at least 1."),
    Setting("data_slot_wait", "GATEWAY_DATA_SLOT_WAIT", "10s", parse_duration,
            "How long an upload or download waits for a free data slot before it is answered 503 `server_busy`."),
    Setting("client_idle_timeout", "GATEWAY_CLIENT_IDLE_TIMEOUT", "60s", parse_positive_duration,
            "A client that sends nothing (request headers or body) or reads nothing of a response for this long "
            "is cut: a stalled upload gets 408 `client_idle` and applies nothing; a stalled download is closed. "
            "Also the keep-alive timeout of idle connections."),
    Setting("log_level", "GATEWAY_LOG_LEVEL", "INFO", parse_log_level,
            "DEBUG, INFO, WARNING or ERROR. `serve` logs JSON lines, one per request at INFO."),
    Setting("metrics_require_key", "GATEWAY_METRICS_REQUIRE_KEY", "false", parse_bool,
            "Whether `GET /metrics` needs an API key (any scope)."),
    Setting("shutdown_timeout", "GATEWAY_SHUTDOWN_TIMEOUT", "30s", parse_duration,
            "On SIGTERM/SIGINT, how long in-flight requests may take to finish before they are cut."),
)


@dataclasses.dataclass(frozen=True)
class Settings:
    database_url: str | None
    data_dir: Path
    api_key: str | None
    auth_failure_limit: int
    auth_failure_window: float
    max_body_bytes: int
    max_field_bytes: int
    add_read_ahead_bytes: int
    max_attributes: int
    sync_export_max_rows: int
    replace_session_ttl: float
    export_ttl: float
    export_dir: Path | None
    preview_ttl: float
    estimate_exact_ms: int
    estimate_sample_rows: int
    rejects_ttl: float
    rejects_max_per_segment: int
    rejects_max_per_endpoint: int
    upload_history_ttl: float
    delete_grace: float
    export_workers: int
    job_lease: float
    pool_max_size: int
    control_pool_size: int
    data_slots: int
    data_slot_wait: float
    client_idle_timeout: float
    log_level: str
    metrics_require_key: bool
    shutdown_timeout: float

    @classmethod
    def load(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Read every setting from ``environ`` (default: the process environment).

        ``overrides`` (CLI flags) win over the environment; ``None`` means "not given".
        """
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for setting in SETTINGS:
            raw = environ.get(setting.env, setting.default)
            try:
                values[setting.field] = setting.parse(raw)
            except ValueError as exc:
                shown = setting.env if setting.secret else f"{setting.env}={raw!r}"
                raise SettingsError(f"{shown} is not valid: {exc}") from None
        values.update({key: value for key, value in overrides.items() if value is not None})
        return cls(**values)

    @property
    def export_path(self) -> Path:
        """``GATEWAY_EXPORT_DIR``, or by default ``exports`` inside the data dir."""
        return self.export_dir if self.export_dir is not None else self.data_dir / "exports"

    @property
    def data_slot_count(self) -> int:
        """``GATEWAY_DATA_SLOTS``, or by default what the main pool can give while keeping a connection for
        each export worker and one for everything else (sweeps, management writes)."""
        return self.data_slots or max(1, self.pool_max_size - self.export_workers - 1)


def settings_table_markdown() -> str:
    """The README's settings table."""
    lines = ["| variable | default | meaning |", "|---|---|---|"]
    for setting in SETTINGS:
        default = f"`{setting.default}`" if setting.default else "(empty)"
        lines.append(f"| `{setting.env}` | {default} | {setting.help} |")
    return "\n".join(lines)
