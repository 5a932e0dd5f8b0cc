"""One root exception; each subclass is a failure the API answers with its status and code.

Driver errors are translated into these in one place (``gateway.db.pool``) so handlers never see asyncpg.
"""

from __future__ import annotations

import re
from typing import Any


class GatewayError(Exception):
    status = 500
    code = "internal_error"
    closes_connection = False  # whether the connection is closed after the answer

    def __init__(self, message: str, *, code: str | None = None, extra: dict[str, Any] | None = None,
                 headers: dict[str, str] | None = None, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.extra = extra or {}  # beside the error object (e.g. a job's ``result``)
        self.details = details or {}  # more fields of the error object (e.g. an expression's ``position``)
        self.headers = headers or {}


class BadRequest(GatewayError):
    status = 400
    code = "bad_request"


def invalid_code(parameter: str) -> str:
    """The error code of an invalid parameter: ``invalid_`` and its name in snake case, as every error code is
    (``replaceSession`` → ``invalid_replace_session``)."""
    return "invalid_" + re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", parameter).lower()


class Unauthorized(GatewayError):
    status = 401
    code = "unauthorized"


class Forbidden(GatewayError):
    status = 403
    code = "insufficient_scope"


class NotFound(GatewayError):
    status = 404
    code = "not_found"


class ClientIdle(GatewayError):
    """408: the client sent nothing for GATEWAY_CLIENT_IDLE_TIMEOUT; the connection is closed after the answer."""

    status = 408
    code = "client_idle"
    closes_connection = True


class Conflict(GatewayError):
    status = 409
    code = "conflict"


class PayloadTooLarge(GatewayError):
    status = 413
    code = "payload_too_large"


class UnsupportedMediaType(GatewayError):
    status = 415
    code = "unsupported_media_type"


class NotImplementedYet(GatewayError):
    """501: Exchange's signal to create an export job instead of reading the data directly."""

    status = 501
    code = "not_implemented"


class TooManyRequests(GatewayError):
    status = 429
    code = "too_many_failed_attempts"

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message, headers={"Retry-After": str(retry_after)})


class ServiceUnavailable(GatewayError):
    status = 503
    code = "database_unavailable"


class DatabaseUnavailable(ServiceUnavailable):
    """PostgreSQL cannot be reached, is too old, or dropped the connection."""


class ServerBusy(ServiceUnavailable):
    """Every data slot stayed taken for GATEWAY_DATA_SLOT_WAIT (gateway.http.clients)."""

    code = "server_busy"

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message, headers={"Retry-After": str(retry_after)})
