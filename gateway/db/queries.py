"""Access to the SQL under the top-level ``sql/``: named queries and numbered migrations.

In a wheel the folder is shipped as ``gateway/sql`` (see pyproject's force-include); in a source
checkout (editable install, tests) it is the repository's ``sql/``.
"""

from __future__ import annotations

import re
from functools import cache
from importlib import resources
from pathlib import Path

_NAME_LINE = re.compile(r"^--\s*name:\s*(\w+)\s*$", re.MULTILINE)
_MIGRATION_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")


def sql_dir() -> Path:
    packaged = Path(str(resources.files("gateway"))) / "sql"
    if packaged.is_dir():
        return packaged
    source = Path(__file__).resolve().parents[2] / "sql"
    if source.is_dir():
        return source
    raise FileNotFoundError("the sql/ folder is missing from this installation")


def parse_queries(text: str) -> dict[str, str]:
    """Split a queries file into {name: statement}; text before the first name line is a comment."""
    parts = _NAME_LINE.split(text)
    queries: dict[str, str] = {}
    for name, body in zip(parts[1::2], parts[2::2]):
        if name in queries:
            raise ValueError(f"query {name!r} is defined twice")
        queries[name] = body.strip()
    return queries


@cache
def load_queries() -> dict[str, str]:
    return parse_queries((sql_dir() / "queries.sql").read_text())


def migration_files() -> list[tuple[str, Path]]:
    """``[(version, path)]`` in the order they apply; the version is the file's name without .sql."""
    found = []
    for path in sorted((sql_dir() / "migrations").iterdir()):
        if path.suffix == ".sql":
            if not _MIGRATION_NAME.match(path.name):
                raise ValueError(f"migration file {path.name} is not named NNNN_name.sql")
            found.append((path.stem, path))
    return found


class _Queries:
    """``QUERIES[name]`` with a clear error for a name that sql/queries.sql does not define."""

    def __getitem__(self, name: str) -> str:
        try:
            return load_queries()[name]
        except KeyError:
            raise KeyError(f"no query named {name!r} in sql/queries.sql") from None


QUERIES = _Queries()
