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
from gateway.segmentation.sources import Profiles


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
    picks = profiles.picks()
    identity_position = profiles.index(profiles.identity_attribute) if profiles.identity_attribute else None
    if len(used) == 1 and len(profiles.sources) == 1 and all(
            pick == [position] for position, pick in enumerate(picks, start=1)):
        attrs = "s1.attrs"  # one source: its rows are the profiles as they are
    else:
        values = []
        for position, pick in enumerate(picks, start=1):
            if position == identity_position:
                values.append(identity)
                continue
            terms = [f"NULLIF({aliases[i]}.attrs[{int(pick[i])}], '')" for i, _source in used if pick[i]]
            values.append("COALESCE(" + ", ".join([*terms, "''"]) + ")")
        attrs = f"ARRAY[{', '.join(values)}]::text[]" if values else "'{}'::text[]"
    return sql("segment_profiles", identity=identity, attrs=attrs, sources=joins)


def _coalesce(terms) -> str:
    terms = list(terms)
    return terms[0] if len(terms) == 1 else f"COALESCE({', '.join(terms)})"
