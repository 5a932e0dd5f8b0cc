"""The tests' oracle for the PQL compiler: the same semantics (gateway.segmentation.compiler's docstring),
evaluated in Python over one profile. Written independently of the compiler (its own patterns, its own
calendar arithmetic: days as ordinals, months as (year, month, day) tuples that need no range check)."""

from __future__ import annotations

import datetime
import re
from collections.abc import Mapping
from decimal import Decimal

from gateway.segmentation import pql

_NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)", re.ASCII)
_DAY = re.compile(r"\d{4}-\d{2}-\d{2}", re.ASCII)
_TIME = re.compile(r"([T ]([01]\d|2[0-3]):[0-5]\d(:[0-5]\d(\.\d+)?)?(Z|[+-]\d{2}(:?\d{2})?)?)?", re.ASCII)
_COMPARE = {"=": lambda a, b: a == b, "!=": lambda a, b: a != b, "<": lambda a, b: a < b,
            "<=": lambda a, b: a <= b, ">": lambda a, b: a > b, ">=": lambda a, b: a >= b}


def as_number(value: str) -> Decimal | None:
    if len(value) <= 1000 and _NUMBER.fullmatch(value):
        return Decimal(value)
    return None


def as_day(value: str) -> str | None:
    """The value's ``YYYY-MM-DD`` when it is a valid date (optionally with a well-formed time), else None."""
    if not _DAY.fullmatch(value[:10]) or not _TIME.fullmatch(value[10:]):
        return None
    try:
        datetime.date.fromisoformat(value[:10])
    except ValueError:
        return None
    return value[:10]


def as_boolean(value: str) -> bool | None:
    return {"true": True, "false": False}.get(value.lower())


def _read(value: str, kind: pql.Literal):
    """The value read as ``kind``'s type (None: it does not read so)."""
    if isinstance(kind, pql.Number):
        return as_number(value)
    if isinstance(kind, pql.Date):
        return as_day(value)
    if isinstance(kind, pql.Boolean):
        return as_boolean(value)
    return value


def _literal(literal: pql.Literal):
    if isinstance(literal, pql.Date):
        return literal.value.isoformat()
    return literal.value


def like_regex(pattern: str) -> re.Pattern[str]:
    parts: list[str] = []
    i = 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "\\":
            parts.append(re.escape(pattern[i + 1]))
            i += 2
            continue
        parts.append(".*" if ch == "%" else "." if ch == "_" else re.escape(ch))
        i += 1
    return re.compile("".join(parts), re.DOTALL)


def evaluate(node: pql.Node, *, identity: str, attributes: Mapping[str, str | None],
             segments: Mapping[str, set[str]], today: datetime.date) -> bool:
    """Whether the profile (``attributes`` keyed by folded name) satisfies ``node``."""

    def value(attribute: pql.Attribute) -> str | None:
        found = attributes[attribute.name.casefold()]
        return found if found else None  # empty is null

    def run(node: pql.Node) -> bool:
        if isinstance(node, pql.And):
            return all(run(item) for item in node.items)
        if isinstance(node, pql.Or):
            return any(run(item) for item in node.items)
        if isinstance(node, pql.Not):
            return not run(node.operand)
        if isinstance(node, pql.InSegment):
            return identity in segments[node.segment]
        v = value(node.attribute)
        if isinstance(node, pql.NullTest):
            return (v is None) == node.is_null
        if v is None:
            return False
        if isinstance(node, pql.Compare):
            read = _read(v, node.value)
            return read is not None and _COMPARE[node.op](read, _literal(node.value))
        if isinstance(node, pql.Membership):
            items = node.values.items
            read = _read(v, items[0]) if items else v
            if read is None:
                return False
            found = any(read == _literal(item) for item in items)
            return found != node.negated
        if isinstance(node, pql.StringTest):
            s = node.argument.value
            if not node.case_sensitive:
                v, s = v.lower(), s.lower()
            method = node.method
            result = {"contains": lambda: s in v, "doesNotContain": lambda: s not in v,
                      "startsWith": lambda: v.startswith(s), "doesNotStartWith": lambda: not v.startswith(s),
                      "endsWith": lambda: v.endswith(s), "doesNotEndWith": lambda: not v.endswith(s),
                      "equals": lambda: v == s, "notEqualTo": lambda: v != s}[method]
            return result()
        if isinstance(node, pql.Like):
            return like_regex(node.pattern.value).fullmatch(v) is not None
        day = as_day(v)
        return day is not None and occurs(node, datetime.date.fromisoformat(day), today)

    return run(node)


def _anchor(name: str, today: datetime.date) -> datetime.date:
    return today + datetime.timedelta(days={"now": 0, "today": 0, "yesterday": -1, "tomorrow": 1}[name])


def _days_in_month(year: int, month: int) -> int:
    if month == 2:
        return 29 if year % 4 == 0 and (year % 100 != 0 or year % 400 == 0) else 28
    return 30 if month in (4, 6, 9, 11) else 31


def occurs(node: pql.Node, day: datetime.date, today: datetime.date) -> bool:
    if isinstance(node, pql.OccursOn):
        return day == _anchor(node.anchor.name, today)
    if isinstance(node, pql.OccursBetween):
        bounds = [b.value if isinstance(b, pql.Date) else _anchor(b.name, today) for b in (node.start, node.end)]
        return bounds[0] <= day <= bounds[1]
    if isinstance(node, pql.OccursPeriod):
        step = {"last": -1, "this": 0, "next": 1}[node.which]
        if node.period == "day":
            return day.toordinal() - today.toordinal() == step
        if node.period == "week":
            return (day.toordinal() - day.weekday()) - (today.toordinal() - today.weekday()) == 7 * step
        if node.period == "month":
            return (day.year * 12 + day.month) - (today.year * 12 + today.month) == step
        return day.year - today.year == step
    assert isinstance(node, pql.OccursRelative)
    anchor = _anchor(node.anchor.name, today)
    sign = -1 if node.direction == "before" else 1
    if node.unit in ("days", "weeks"):
        a, d = anchor.toordinal(), day.toordinal()
        b = a + sign * node.amount * (7 if node.unit == "weeks" else 1)
    else:
        index = anchor.year * 12 + anchor.month - 1 + sign * node.amount * (12 if node.unit == "years" else 1)
        year, month = index // 12, index % 12 + 1
        a, d = (anchor.year, anchor.month, anchor.day), (day.year, day.month, day.day)
        b = (year, month, min(anchor.day, _days_in_month(year, month)))
    if node.op in ("=", "!="):
        return (d == b) == (node.op == "=")
    if node.direction == "before":
        return {"<=": b <= d <= a, "<": b < d <= a, ">=": d <= b, ">": d < b}[node.op]
    return {"<=": a <= d <= b, "<": a <= d < b, ">=": d >= b, ">": d > b}[node.op]
