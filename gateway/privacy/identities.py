"""The identities of an erasure or a suppression, in every form a segment may store them.

A segment stores an identity normalised by one rule (gateway.ingest.upload.normalise_identity): trimmed,
lower-cased when its identity column is an email column, hashed when it hashes identities. An erasure does
not know in advance which segment holds what, so each identity is kept in the four forms (as sent, lowered,
and both hashed) and each segment is searched in its own (``erase_form``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import StreamReader

from gateway.errors import BadRequest
from gateway.ingest.upload import ColumnRules, Upload, hash_identity, lowercases, normalise_identity, plan_columns

MAX_LISTED = 10_000  # identities in a JSON body; more go as a CSV body
FORM_COLUMNS = ("plain", "lowered", "plain_sha256", "lowered_sha256")  # privacy_erase_identities


def forms(identity: str) -> tuple[str, str, str, str] | None:
    """``(as sent, lower-cased, each hashed)`` of one identity (trimmed); None when it is empty."""
    plain = normalise_identity(identity, False)
    if not plain:
        return None
    lowered = normalise_identity(identity, True)
    return plain, lowered, hash_identity(plain), hash_identity(lowered)


def erase_form(identity_attribute: str, identity_hashing: str | None) -> str:
    """The form (a column of ``privacy_erase_identities``) in which a segment stores identities."""
    form = "lowered" if lowercases(identity_attribute) else "plain"
    return form + "_sha256" if identity_hashing is not None else form


def identity_hashes(identity: str) -> list[str]:
    """The lowercase SHA-256 hex of an identity as sent and lower-cased (one or two values): what the
    suppression list and the audit hold, and what a look-up for this identity compares with."""
    found = forms(identity)
    if found is None:
        return []
    return sorted({found[2].lower(), found[3].lower()})


def identity_list(payload: dict[str, Any]) -> list[str]:
    """``identities`` of a JSON body: 1 to MAX_LISTED strings (400 otherwise)."""
    identities = payload.get("identities")
    if not isinstance(identities, list) or not identities:
        raise BadRequest("identities must be a non-empty list of strings (or send a CSV body)",
                         code="invalid_identities")
    if len(identities) > MAX_LISTED:
        raise BadRequest(f"at most {MAX_LISTED} identities in a JSON body; send more as a CSV body with an "
                         "identity column", code="too_many_identities")
    if not all(isinstance(identity, str) and "\x00" not in identity for identity in identities):
        raise BadRequest("every identity must be a string without a NUL character", code="invalid_identities")
    return identities


@dataclasses.dataclass
class Received:
    """What a request sent: rows (or list entries), how many were unusable, and the first of those."""

    received: int = 0
    invalid: int = 0
    invalid_samples: list[dict[str, Any]] = dataclasses.field(default_factory=list)


class ListedIdentities:
    """The identities of a JSON list, as rows of ``privacy_erase_identities``."""

    def __init__(self, identities: list[str]) -> None:
        self._identities = identities
        self.received = Received()

    async def rows(self, job_id: int) -> AsyncIterator[tuple[Any, ...]]:
        for index, identity in enumerate(self._identities):
            self.received.received += 1
            found = forms(identity)
            if found is None:
                self.received.invalid += 1
                if len(self.received.invalid_samples) < 10:
                    self.received.invalid_samples.append({"index": index, "reason": "empty identity"})
                continue
            yield job_id, *found


class CsvIdentities:
    """The identities of a streamed CSV body (any size), read by the push's parser (gateway.ingest.upload):
    the identity column is ``ids`` when given, else the first whose name holds "email", else the first.
    Every row is counted; invalid ones (CSV errors, an empty identity) are counted and sampled."""

    def __init__(self, content: StreamReader, *, gzipped: bool, ids: str | None, max_body_bytes: int,
                 max_field_bytes: int, max_attributes: int, idle_timeout: float | None) -> None:
        self._upload = Upload(content, gzipped=gzipped, max_body_bytes=max_body_bytes,
                              max_field_bytes=max_field_bytes, idle_timeout=idle_timeout)
        self._rules = ColumnRules(ids=ids, max_attributes=max_attributes, extends=False)
        self.received = Received()

    async def rows(self, job_id: int) -> AsyncIterator[tuple[Any, ...]]:
        header = await self._upload.read_header()
        plan = plan_columns(header, None, [], self._rules)
        index = plan.identity_index + 1  # records are (line, field0, field1, …)
        async for record in self._upload.records(plan):
            found = forms(record[index])
            if found is not None:  # the parser already rejected an empty identity
                yield job_id, *found
        upload = self._upload
        self.received = Received(upload.received, upload.invalid, upload.invalid_samples)
