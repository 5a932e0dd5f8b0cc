"""The rows a definition is evaluated over: one per identity of its sources, each attribute from the first
source that has it non-empty (``mergePolicy: "firstSource"``, gateway.segmentation.sources).

``profiles_sql`` gives a SELECT of ``identity`` and ``attrs`` (text[], aligned with ``Profiles.attributes``),
the relation a compiled predicate reads as ``p``. Its SQL text is made from integers and the members tables'
quoted names only: the sources are FULL JOINed by identity, and each merged attribute is the COALESCE of the
sources' non-empty values in source order (the merged identity attribute is the identity itself).
"""

from __future__ import annotations

from collections.abc import Collection

from gateway.db.names import sql, table_names
from gateway.db.queries import QUERIES
from gateway.segmentation.sources import Profiles, Source


def profiles_sql(profiles: Profiles, present: Collection[int]) -> str:
    """The profiles of ``profiles``' sources whose members table exists (``present``: segment ids; a source
    nothing was ever pushed to has none, and adds no profile)."""
    used = [(i, source) for i, source in enumerate(profiles.sources) if source.segment_id in present]
    if not used:
        return QUERIES["segment_profiles_none"]
    aliases = {i: f"s{n}" for n, (i, _source) in enumerate(used, start=1)}
    joins = ""
    seen: list[str] = []
    for i, source in used:
        table = f"{table_names(source.segment_id)['members']} {aliases[i]}"
        if not seen:
            joins = table
        else:
            joins += f" FULL JOIN {table} ON {aliases[i]}.identity = {_coalesce(f'{a}.identity' for a in seen)}"
        seen.append(aliases[i])
    identity = _coalesce(f"{a}.identity" for a in seen)
    return sql("segment_profiles", identity=identity, attrs=_attrs(profiles, used, aliases, identity), sources=joins)


def sampled_profiles_sql(profiles: Profiles, present: Collection[int], method: str) -> str:
    """A random sample of the rows of the sources of ``profiles_sql(profiles, present)``: each row is in it
    with probability ``$1`` percent (``$2``: the sample's seed; each source has its own), independently of
    the others with ``BERNOULLI``, by whole pages of its members table with ``SYSTEM`` (``method``). Each
    sampled row is its identity's profile (attributes merged from every source by primary-key lookups, as
    ``profiles_sql`` merges them), with ``page`` (its source's 1-based number in the upper 32 bits, its
    block below: the unit of a ``SYSTEM`` sample's variance) and ``first``: whether its source is the first
    that has the identity. So every profile of the FULL JOIN is counted, through its first source's row,
    with exactly that probability, and each source's sampled rows estimate a part of known size: its rows."""
    if method not in ("SYSTEM", "BERNOULLI"):
        raise ValueError(f"sample method must be SYSTEM or BERNOULLI, not {method!r}")
    used = [(i, source) for i, source in enumerate(profiles.sources) if source.segment_id in present]
    if not used:
        return QUERIES["segment_profiles_sample_none"]
    aliases = {i: f"s{n}" for n, (i, _source) in enumerate(used, start=1)}
    tables = {i: table_names(source.segment_id)["members"] for i, source in used}
    if len(used) == 1:  # one source: its sampled rows are the sampled profiles
        (i, _source), = used
        return sql("segment_profiles_sample", identity=f"{aliases[i]}.identity",
                   attrs=_attrs(profiles, used, aliases, f"{aliases[i]}.identity"), page=_page(aliases[i], 1),
                   first="true", sources=f"{tables[i]} {aliases[i]} TABLESAMPLE {method} ($1) REPEATABLE ($2)")
    draws = [f"SELECT d.identity, {_page('d', n)} AS page FROM {tables[i]} d "
             f"TABLESAMPLE {method} ($1) REPEATABLE ($2::float8 + {n})" for n, (i, _source) in enumerate(used, start=1)]
    joins = f"({' UNION ALL '.join(draws)}) AS d" + _lookups(used, aliases, tables)
    # a row of source n is its profile's first-source row when no earlier source has its identity
    first = "CASE d.page >> 32 " + " ".join(
        f"WHEN {n} THEN " + " AND ".join(["true", *(f"{aliases[j]}.identity IS NULL" for j, _ in used[:n - 1])])
        for n in range(1, len(used) + 1)) + " END"
    return sql("segment_profiles_sample", identity="d.identity", attrs=_attrs(profiles, used, aliases, "d.identity"),
               page="d.page", first=first, sources=joins)


def listed_profiles_sql(profiles: Profiles, present: Collection[int], identities: str) -> str:
    """The profiles of ``profiles_sql(profiles, present)`` whose identity is in ``identities`` (a bind
    parameter such as ``$3``, a text[]), by primary-key lookups in every source: what a preview page over
    several sources evaluates, a batch of identities at a time (a FULL JOIN would be evaluated whole)."""
    used = [(i, source) for i, source in enumerate(profiles.sources) if source.segment_id in present]
    if not used:
        return QUERIES["segment_profiles_none"]
    aliases = {i: f"s{n}" for n, (i, _source) in enumerate(used, start=1)}
    tables = {i: table_names(source.segment_id)["members"] for i, source in used}
    listed = f"(SELECT DISTINCT unnest({identities}::text[]) COLLATE \"C\" AS identity) AS d"
    joins = listed + _lookups(used, aliases, tables)
    return sql("segment_profiles", identity="d.identity", attrs=_attrs(profiles, used, aliases, "d.identity"),
               sources=joins)


def _lookups(used: list[tuple[int, Source]], aliases: dict[int, str], tables: dict[int, str]) -> str:
    """Each source's row of identity ``d.identity`` (or NULLs), by LATERAL primary-key lookups: one per
    row of ``d``, whatever its size (a join could choose a pass over a whole source instead)."""
    return "".join(f" LEFT JOIN LATERAL (SELECT x.identity, x.attrs FROM {tables[i]} x WHERE x.identity = "
                   f"d.identity) {aliases[i]} ON true" for i, _source in used)


def _page(alias: str, source_number: int) -> str:
    """A sampled row's page, unique over the sources: the source's number, then the block of its ctid."""
    return f"({int(source_number)}::bigint << 32 | ({alias}.ctid::text::point)[0]::bigint)"


def _attrs(profiles: Profiles, used: list[tuple[int, Source]], aliases: dict[int, str], identity: str) -> str:
    """The merged ``attrs`` of a profile: each attribute from the first source that has it non-empty."""
    picks = profiles.picks()
    identity_position = profiles.index(profiles.identity_attribute) if profiles.identity_attribute else None
    if len(used) == 1 and len(profiles.sources) == 1 and all(
            pick == [position] for position, pick in enumerate(picks, start=1)):
        return f"{aliases[used[0][0]]}.attrs"  # one source: its rows are the profiles as they are
    values = []
    for position, pick in enumerate(picks, start=1):
        if position == identity_position:
            values.append(identity)
            continue
        terms = [f"NULLIF({aliases[i]}.attrs[{int(pick[i])}], '')" for i, _source in used if pick[i]]
        values.append("COALESCE(" + ", ".join([*terms, "''"]) + ")")
    return f"ARRAY[{', '.join(values)}]::text[]" if values else "'{}'::text[]"


def _coalesce(terms) -> str:
    terms = list(terms)
    return terms[0] if len(terms) == 1 else f"COALESCE({', '.join(terms)})"
