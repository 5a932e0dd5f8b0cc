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
import logging
import secrets

import asyncpg

from gateway.errors import Forbidden, Unauthorized
from gateway.db.queries import QUERIES

log = logging.getLogger(__name__)

KEY_PREFIX = "agw_"
SCOPES = ("read", "write", "admin")  # each includes the ones before it
DEFAULT_ENDPOINT = "default"
# NOTIFY channel of revocations; the payload is the key's lookup_id (see gateway.auth.cache).
REVOCATIONS_CHANNEL = "audience_gateway_keys"


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


@dataclasses.dataclass(frozen=True)
class KeyRecord:
    """A stored key as authentication needs it (what gateway.auth.cache keeps in memory)."""

    id: int
    endpoint_id: int
    endpoint_name: str
    secret_hash: bytes
    scope: str
    expires_at: dt.datetime | None
    revoked_at: dt.datetime | None


def parse_authorization(authorization: str | None) -> tuple[str, bytes]:
    """``(lookup_id, secret_hash)`` of the bearer token, or 401 ``missing_token``."""
    token = bearer_token(authorization)
    if token is None:
        raise Unauthorized("an API key is required: send Authorization: Bearer <key>",
                           code="missing_token")
    return hash_key(token)


async def fetch_key(conn: asyncpg.Connection | asyncpg.Pool, lookup_id: str) -> KeyRecord | None:
    row = await conn.fetchrow(QUERIES["key_by_lookup_id"], lookup_id)
    return None if row is None else KeyRecord(**dict(row))


def check_key(record: KeyRecord | None, secret_hash: bytes) -> Principal:
    """The caller, or 401 ``invalid_token`` for an unknown, revoked or expired key (checked at every call)."""
    if record is None or not hmac.compare_digest(record.secret_hash, secret_hash):
        raise Unauthorized("the API key is not valid", code="invalid_token")
    now = dt.datetime.now(dt.timezone.utc)
    if record.revoked_at is not None or (record.expires_at is not None and record.expires_at <= now):
        raise Unauthorized("the API key is not valid", code="invalid_token")
    return Principal(record.id, record.endpoint_id, record.endpoint_name, record.scope)


async def insert_key(conn: asyncpg.Connection, secret: str, *, endpoint: str = DEFAULT_ENDPOINT,
                     scope: str = "admin", label: str = "", expires_at: dt.datetime | None = None,
                     bootstrap: bool = False) -> int | None:
    """Store a key; ``None`` when that exact key already exists."""
    lookup_id, secret_hash = hash_key(secret)
    return await conn.fetchval(QUERIES["key_insert"], endpoint, lookup_id, secret_hash, scope, label, expires_at,
                               bootstrap)


async def list_keys(conn: asyncpg.Connection, endpoint: str | None = None) -> list[asyncpg.Record]:
    """Every key (of one endpoint if named), oldest first; never a secret or its hash."""
    return await conn.fetch(QUERIES["key_list"], endpoint)


async def revoke_key(conn: asyncpg.Connection, key_id: int) -> asyncpg.Record | None:
    """Revoke a key and, in the same transaction, NOTIFY every serve process to drop it from its cache.

    Returns the key's row (``revoked_at`` is the first revocation's time), or None for an unknown id.
    """
    async with conn.transaction():
        row = await conn.fetchrow(QUERIES["key_revoke"], key_id)
        if row is not None:
            await conn.execute(QUERIES["key_notify"], REVOCATIONS_CHANNEL, row["lookup_id"])
    return row


async def ensure_bootstrap_key(conn: asyncpg.Connection, configured: str | None) -> str | None:
    """Make ``GATEWAY_API_KEY`` exist (admin, default endpoint); with none set and no key at all, make one.

    A key made by an earlier, different value of ``GATEWAY_API_KEY`` is revoked: changing the variable
    replaces the key, it does not add one. Returns a newly generated key (to print once), else None. Safe
    when several processes start at once.
    """
    async with conn.transaction():
        await conn.execute(QUERIES["key_bootstrap_lock"])
        if configured:
            await insert_key(conn, configured, label="GATEWAY_API_KEY", bootstrap=True)
            lookup_id, _ = hash_key(configured)
            for retired in await conn.fetch(QUERIES["key_bootstrap_retire"], lookup_id):
                log.warning("key %s (an earlier GATEWAY_API_KEY) revoked: GATEWAY_API_KEY changed", retired["id"])
                await conn.execute(QUERIES["key_notify"], REVOCATIONS_CHANNEL, retired["lookup_id"])
            if await conn.fetchval(QUERIES["key_bootstrap_revoked"], lookup_id):
                log.warning("GATEWAY_API_KEY names a revoked key: it authenticates nothing")
            return None
        if await conn.fetchval(QUERIES["key_count"]) > 0:
            return None
        secret = generate_key()
        await insert_key(conn, secret, label="generated at first start")
        return secret
