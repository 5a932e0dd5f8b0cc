import re

import pytest

from gateway.db.queries import load_queries, migration_files, parse_queries
from tests.conftest import REPO


def test_every_query_used_in_python_exists():
    used = set()
    for path in (REPO / "gateway").rglob("*.py"):
        used |= set(re.findall(r'QUERIES\["(\w+)"\]', path.read_text()))
    for path in (REPO / "tests").rglob("*.py"):
        used |= set(re.findall(r'QUERIES\["(\w+)"\]', path.read_text()))
    assert used, "the scan found no query names"
    assert used - set(load_queries()) == set()


def test_migrations_are_numbered_without_gaps():
    numbers = [int(version[:4]) for version, _ in migration_files()]
    assert numbers == list(range(1, len(numbers) + 1))


def test_parse_queries_rejects_duplicates():
    with pytest.raises(ValueError, match="twice"):
        parse_queries("-- name: a\nSELECT 1;\n-- name: a\nSELECT 2;\n")
    assert parse_queries("-- header\n-- name: one\nSELECT 1;\n\n-- name: two\nSELECT 2;") == {
        "one": "SELECT 1;", "two": "SELECT 2;"}
