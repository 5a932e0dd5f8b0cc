"""API keys: generation, hashing, lookup and the bootstrap key.

A key is ``agw_`` + 43 URL-safe characters (32 random bytes). We store only its SHA-256: the row is
found by a short prefix of the hash (``lookup_id``) and the full hash is compared in constant time.
A plain fast hash is right here because keys are long random strings, not passwords.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import hmac
import secrets

import asyncpg

from gateway.errors import Forbidden, Unauthorized
from gateway.sqlfiles import QUERIES

KEY_PREFIX = "agw_"
SCOPES = ("read", "write", "admin")  # each includes the ones before it
DEFAULT_ENDPOINT = "default"


@dataclasses.dataclass(frozen=True)
class Principal:
    """Who is calling: the key's id, its endpoint (tenant) and scope."""

    key_id: int
    endpoint_id: int
    endpoint_name: str
    scope: str

    def require(self, scope: str) -> None:
        if SCOPES.index(self.scope) < SCOPES.index(scope):
            raise Forbidden(f"this key has the {self.scope} scope; the call needs {scope}")


def generate_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_key(secret: str) -> tuple[str, bytes]:
    """``(lookup_id, secret_hash)`` for a key."""
    digest = hashlib.sha256(secret.encode()).digest()
    return digest[:8].hex(), digest


def bearer_token(header: str | None) -> str | None:
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


async def authenticate(conn: asyncpg.Connection | asyncpg.Pool, authorization: str | None) -> Principal:
    token = bearer_token(authorization)
    if token is None:
        raise Unauthorized("an API key is required: send Authorization: Bearer <key>",
                           code="missing_token")
    lookup_id, secret_hash = hash_key(token)
    row = await conn.fetchrow(QUERIES["key_by_lookup_id"], lookup_id)
    if row is None or not hmac.compare_digest(row["secret_hash"], secret_hash):
        raise Unauthorized("the API key is not valid", code="invalid_token")
    now = dt.datetime.now(dt.timezone.utc)
    if row["revoked_at"] is not None or (row["expires_at"] is not None and row["expires_at"] <= now):
        raise Unauthorized("the API key is not valid", code="invalid_token")
    return Principal(row["id"], row["endpoint_id"], row["endpoint_name"], row["scope"])


async def insert_key(conn: asyncpg.Connection, secret: str, *, endpoint: str = DEFAULT_ENDPOINT,
                     scope: str = "admin", label: str = "", expires_at: dt.datetime | None = None) -> int | None:
    """Store a key; ``None`` when that exact key already exists."""
    lookup_id, secret_hash = hash_key(secret)
    return await conn.fetchval(QUERIES["key_insert"], endpoint, lookup_id, secret_hash, scope, label, expires_at)


async def ensure_bootstrap_key(conn: asyncpg.Connection, configured: str | None) -> str | None:
    """Make ``GATEWAY_API_KEY`` exist (admin, default endpoint); with none set and no key at all, make one.

    Returns a newly generated key (to print once), else None. Safe when several processes start at once.
    """
    async with conn.transaction():
        await conn.execute(QUERIES["key_bootstrap_lock"])
        if configured:
            await insert_key(conn, configured, label="GATEWAY_API_KEY")
            return None
        if await conn.fetchval(QUERIES["key_count"]) > 0:
            return None
        secret = generate_key()
        await insert_key(conn, secret, label="generated at first start")
        return secret
