"""Entity search (``GET /api/search/entities``): audiences and definitions by name and description.

The search string is parsed here into terms: words (all of them), ``prefix*``, ``"an exact phrase"``,
``field:term`` (fields ``name``, ``description``, ``id``; ``field:"a phrase"`` and ``field:pre*`` too) and
``a OR b`` (groups of terms; a match of any group). Nothing in it is syntax anywhere else: the terms go to
PostgreSQL as parameters, each turned into a tsquery by ``plainto_tsquery`` / ``phraseto_tsquery`` or from
``to_tsvector``'s lexemes (query ``search_entities``), so quotes, ``&|!:*()`` and backslashes are just text.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import asyncpg

from gateway.db.queries import QUERIES
from gateway.ids import parse_int

FIELDS = ("name", "description", "id")
MAX_TERMS = 32  # terms of one search; more are a 400 (each is a tsquery built per request)

_TOKEN = re.compile(r'(?:(?P<field>[A-Za-z]+):)?(?:"(?P<phrase>[^"]*)"?|(?P<word>[^\s"]+))')


@dataclasses.dataclass(frozen=True)
class Term:
    field: str  # any | name | description | id
    kind: str  # word | prefix | phrase
    text: str


@dataclasses.dataclass(frozen=True)
class Search:
    """Groups of terms (a match of any group; a group matches when all its terms do)."""

    groups: tuple[tuple[Term, ...], ...]


class TooManyTerms(ValueError):
    pass


def parse(text: str) -> Search:
    """A search string as groups of terms. Never fails on any text: an unknown ``field:`` is part of the
    word, an unclosed quote closes at the end, ``OR`` at either end or doubled is ignored."""
    groups: list[list[Term]] = [[]]
    terms = 0
    position = 0
    while True:
        while position < len(text) and text[position].isspace():
            position += 1
        if position >= len(text):
            break
        match = _TOKEN.match(text, position)
        assert match is not None  # a non-space character always starts a word or a phrase
        position = match.end()
        field, phrase, word = match.group("field"), match.group("phrase"), match.group("word")
        if field is not None and field.lower() not in FIELDS:
            if phrase is not None:  # "unknown:" then a phrase: the unknown part is a word of its own
                term_list = [Term("any", "word", field), Term("any", "phrase", phrase)]
            else:
                term_list = [_word("any", f"{field}:{word}")]
        elif phrase is not None:
            term_list = [Term((field or "any").lower(), "phrase", phrase)]
        else:
            if field is None and word == "OR":
                groups.append([])
                continue
            term_list = [_word((field or "any").lower(), word)]
        groups[-1].extend(term_list)
        terms += len(term_list)
        if terms > MAX_TERMS:
            raise TooManyTerms(f"at most {MAX_TERMS} terms in a search")
    return Search(tuple(tuple(group) for group in groups if group))


def _word(field: str, word: str) -> Term:
    if field != "id" and word.endswith("*") and word.rstrip("*"):
        return Term(field, "prefix", word.rstrip("*"))
    return Term(field, "word", word)


def _group_id(group: tuple[Term, ...]) -> tuple[bool, int | None]:
    """(possible, the id the group requires): ``id:`` terms must all name one positive integer id."""
    ids = {parse_int(term.text) for term in group if term.field == "id"}
    if not ids:
        return True, None
    if len(ids) > 1 or None in ids:
        return False, None
    return True, ids.pop()


def describe(row: asyncpg.Record) -> dict[str, Any]:
    return {"id": str(row["id"]), "type": row["kind"], "name": row["name"], "description": row["description"],
            "score": round(float(row["rank"]), 6)}


@dataclasses.dataclass(frozen=True)
class Found:
    rows: list[asyncpg.Record]
    total: int


async def search_entities(conn: asyncpg.Connection | asyncpg.Pool, endpoint_id: int, search: Search, *,
                          limit: int, offset: int) -> Found:
    """The endpoint's audiences and definitions matching ``search``, best first (then audiences before
    definitions, then by id); another endpoint's are never looked at."""
    groups, fields, kinds, texts, ids = [], [], [], [], []
    for group in search.groups:
        possible, required_id = _group_id(group)
        if not possible:
            continue  # e.g. id:abc, or id:1 id:2: nothing can match it
        ids.append(required_id)
        for term in group:
            if term.field != "id":
                groups.append(len(ids))
                fields.append(term.field)
                kinds.append(term.kind)
                texts.append(term.text)
    if not ids:
        return Found([], 0)
    rows = await conn.fetch(QUERIES["search_entities"], endpoint_id, groups, fields, kinds, texts, ids, limit, offset)
    return Found([row for row in rows if row["id"] is not None], rows[0]["total"])
