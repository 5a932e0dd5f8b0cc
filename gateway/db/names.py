"""Per-segment, per-session and per-job table names, and the named queries that use them.

One place builds these identifiers: from integers only (never from request text), each part quoted with
``quoted`` so a name is an identifier whatever it holds.
"""

from __future__ import annotations

from gateway.db.queries import QUERIES


def quoted(*parts: str) -> str:
    """A (schema-qualified) SQL identifier: each part in double quotes, inner quotes doubled."""
    return ".".join('"' + part.replace('"', '""') + '"' for part in parts)


def staging_table(session_id: int) -> tuple[str, str]:
    """A REPLACE session's staging table as (schema, name), unquoted (for asyncpg's COPY)."""
    return "staging", f"replace_{int(session_id)}"


def members_table(segment_id: int) -> tuple[str, str]:
    """A segment's members table as (schema, name), unquoted (for asyncpg's COPY)."""
    return "audience", f"members_{int(segment_id)}"


def table_names(segment_id: int | None = None, session_id: int | None = None,
                job_id: int | None = None) -> dict[str, str]:
    """Identifiers for the SQL templates: ``{members}`` and its replacement for a segment, ``{staging}``
    for a REPLACE session, ``{export_table}`` for an export job's snapshot."""
    names: dict[str, str] = {}
    if segment_id is not None:
        members = members_table(segment_id)[1]
        names.update({
            "members": quoted("audience", members),
            "members_name": quoted(members),
            "members_pkey": quoted(f"{members}_pkey"),
            "members_new": quoted("audience", f"{members}_new"),
            "members_new_name": quoted(f"{members}_new"),
            "members_new_pkey": quoted(f"{members}_new_pkey"),
            "members_new_pkey_qualified": quoted("audience", f"{members}_new_pkey"),
        })
    if session_id is not None:
        names["staging"] = quoted(*staging_table(session_id))
        names["staging_moved"] = quoted("audience", f"replace_{int(session_id)}")
    if job_id is not None:
        names["export_table"] = quoted("exports", f"job_{int(job_id)}")
    return names


def sql(name: str, *, segment_id: int | None = None, session_id: int | None = None, job_id: int | None = None,
        **fragments: str) -> str:
    """A named query with its table names filled in. ``fragments`` are further SQL pieces the caller built
    from integers or checked names only (an upload's columns, export columns)."""
    return QUERIES[name].format(**table_names(segment_id, session_id, job_id), **fragments)
