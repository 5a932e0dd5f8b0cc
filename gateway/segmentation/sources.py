"""A definition's sources and the profiles they make.

A profile is an identity found in any source. Its attribute ``X`` is the value from the first source in
the definition's list (for ``"*"``: every active Contact List and Database of the endpoint, lowest id
first) whose member row has ``X`` non-empty: the "firstSource" merge policy. The profiles' attributes are
every source's attributes in first-seen order, names compared by ``fold_name``; the first source's identity
attribute is the profiles' identity attribute, and its value is always the profile's identity.

Profiles are joined by identity, so every source must store identities alike: all hashed with the same
``identityHashing``, or none (else 400 ``mixed_identity_hashing``: a hashed identity never equals a plain
one, and the merge would silently split each person in two). The definition's audience takes that setting,
so exports, lookups and erasures treat its identities as they treat the sources'. The same holds for the
segments ``inSegment`` reads (gateway.segmentation.definitions, gateway.segmentation.evaluate).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import asyncpg

from gateway.db.queries import QUERIES
from gateway.errors import BadRequest
from gateway.ingest.csvparse import fold_name

MERGE_POLICY = "firstSource"
SOURCE_TYPES = ("Contact Lists", "Databases")
ALL_SOURCES = "*"


@dataclasses.dataclass(frozen=True)
class Source:
    segment_id: int
    identity_attribute: str | None  # None: nothing was ever pushed to it
    attributes: tuple[str, ...]  # its members' attrs are aligned with these
    identity_hashing: str | None = None


@dataclasses.dataclass(frozen=True)
class Profiles:
    """The merged view of a definition's sources."""
    sources: tuple[Source, ...]
    identity_attribute: str | None  # None when no source has any member yet
    attributes: tuple[str, ...]  # merged, first-seen order; the identity attribute among them

    @property
    def identity_hashing(self) -> str | None:
        """How the profiles' identities are stored (``resolve`` made sure all sources agree)."""
        return self.sources[0].identity_hashing if self.sources else None

    def index(self, name: str) -> int | None:
        """The 1-based position of attribute ``name`` (any case) in a profile's attrs; None if no source has it."""
        folded = fold_name(name)
        for position, attribute in enumerate(self.attributes, start=1):
            if fold_name(attribute) == folded:
                return position
        return None

    def picks(self) -> list[list[int]]:
        """For each merged attribute, each source's 1-based position of it in its own attrs (0: it has
        none), in source order: what the merge reads, first non-empty wins."""
        positions = [{fold_name(name): i for i, name in enumerate(source.attributes, start=1)}
                     for source in self.sources]
        return [[position.get(fold_name(name), 0) for position in positions] for name in self.attributes]


def parse_sources(value: object) -> list[int] | None:
    """The ``sources`` of a request: ``"*"`` (or ``["*"]``) → None, else a non-empty list of segment ids
    (strings or integers). 400 ``invalid_sources`` otherwise."""
    if value == ALL_SOURCES or value == [ALL_SOURCES]:
        return None
    if not isinstance(value, list) or not value:
        raise BadRequest('sources must be "*" or a non-empty list of segment ids', code="invalid_sources")
    ids: list[int] = []
    for item in value:
        text = str(item) if isinstance(item, (str, int)) and not isinstance(item, bool) else ""
        if not text.isascii() or not text.isdigit() or not 0 < int(text) < 2**63:
            raise BadRequest(f"sources: {item!r} is not a segment id", code="invalid_sources")
        if int(text) not in ids:
            ids.append(int(text))
    return ids


def show_sources(ids: Sequence[int] | None) -> list[str] | str:
    """``sources`` as the JSON shows it: ids as strings, or ``"*"``."""
    return ALL_SOURCES if ids is None else [str(i) for i in ids]


async def resolve(conn: asyncpg.Connection | asyncpg.Pool, endpoint_id: int, ids: Sequence[int] | None) -> Profiles:
    """The endpoint's source segments, in merge order. 400 ``invalid_sources`` naming a listed segment
    that is missing (or another endpoint's), deleted, inactive or not a Contact List or Database."""
    rows = await conn.fetch(QUERIES["segmentation_sources"], endpoint_id, None if ids is None else list(ids))
    by_id = {row["id"]: row for row in rows}
    if ids is None:
        chosen = [row for row in rows if row["type"] in SOURCE_TYPES and row["status"] == "active"]
    else:
        chosen = []
        for segment_id in ids:
            row = by_id.get(segment_id)
            if row is None:
                raise BadRequest(f"sources: segment {segment_id} does not exist", code="invalid_sources")
            if row["type"] not in SOURCE_TYPES or row["status"] != "active":
                raise BadRequest(f"sources: segment {segment_id} is {row['status']} and of type {row['type']}; a "
                                 f"source must be an active Contact List or Database", code="invalid_sources")
            chosen.append(row)
    sources = tuple(Source(row["id"], row["identity_attribute"], tuple(row["attributes"]), row["identity_hashing"])
                    for row in chosen)
    require_same_hashing(sources[0].identity_hashing if sources else None,
                         {source.segment_id: source.identity_hashing for source in sources}, "sources")
    return merge(sources)


def require_same_hashing(hashing: str | None, segments: dict[int, str | None], what: str) -> None:
    """400 ``mixed_identity_hashing`` when one of ``segments`` (id → its identityHashing) stores identities
    otherwise than ``hashing`` (the profiles'): their identities would never match."""
    other = {segment_id: h for segment_id, h in segments.items() if h != hashing}
    if other:
        def shown(h: str | None) -> str:
            return h or "none"
        listed = ", ".join(f"segment {segment_id}: {shown(h)}" for segment_id, h in segments.items())
        raise BadRequest(f"{what} store identities differently ({listed}); a definition's sources and the "
                         f"segments inSegment reads must all have the same identityHashing",
                         code="mixed_identity_hashing")


def merge(sources: Sequence[Source]) -> Profiles:
    """The profiles' attributes: every source's, first-seen order, names folded."""
    seen: set[str] = set()
    attributes: list[str] = []
    for source in sources:
        for name in source.attributes:
            if fold_name(name) not in seen:
                seen.add(fold_name(name))
                attributes.append(name)
    identity = next((s.identity_attribute for s in sources if s.identity_attribute is not None), None)
    return Profiles(tuple(sources), identity, tuple(attributes))
