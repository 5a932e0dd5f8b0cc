"""Structured logging: one JSON object per line, each carrying the request id of the request it belongs to.

The request id lives in a context variable set by the request middleware; tasks started while handling
a request inherit it, so every line a request causes can be found with one ``grep``.
"""

from __future__ import annotations

import contextvars
import dataclasses
import datetime
import logging
import re
import sys
import uuid
from typing import Any

import orjson

REQUEST_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)
REQUEST_ID_HEADER = "X-Request-ID"
MAX_REQUEST_ID_LENGTH = 64
_UNSAFE = re.compile(r"[^A-Za-z0-9._:/+=@-]")
ACCESS_LOGGER = "gateway.access"


@dataclasses.dataclass
class RequestStats:
    """What a handler moved, filled in by the handler for its request's access line."""

    rows: int | None = None
    bytes_received: int = 0
    cut_short: str | None = None  # why the answer ended early: "client_gone", or what failed mid-answer


def request_id_from(header: str | None) -> str:
    """The client's id made safe to log and echo (a short run of plain characters), or a new one."""
    cleaned = _UNSAFE.sub("", header or "")[:MAX_REQUEST_ID_LENGTH]
    return cleaned or uuid.uuid4().hex


class RequestIdFilter(logging.Filter):
    """Stamps every record with the current request's id (None outside a request)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = REQUEST_ID.get()
        return True


class JsonFormatter(logging.Formatter):
    """``{"time", "level", "logger", "pid", "message", "request_id", …}``; access lines add their ``fields``."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.datetime.fromtimestamp(record.created, datetime.timezone.utc).isoformat(
                timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "pid": record.process,  # which worker, with serve --workers
            "message": record.getMessage(),
            "request_id": getattr(record, "request_id", None) or REQUEST_ID.get(),
        }
        entry.update(getattr(record, "fields", None) or {})
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


def configure_json_logging(level: str) -> None:
    """All logging of the process as JSON lines on stderr (``serve``)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(RequestIdFilter())
    logging.basicConfig(level=level, handlers=[handler], force=True)
