"""Compile a PQL tree (``gateway.segmentation.pql``) into a boolean SQL expression over one profile row.

The row is aliased ``p`` with columns ``identity`` and ``attrs`` (text[], the merged attributes). The SQL
text comes only from the tree's shape and the constants below; every literal, every attribute's index
(``p.attrs[$k::int]``) and every date derived from "now" is a bind parameter, numbered from ``first_param``
and cast explicitly so that asyncpg knows its type. Nothing a user typed becomes SQL text (an
``inSegment`` argument is only a key into ``segment_tables``, whose values the caller quotes).

Semantics (``tests/segmentation_reference.py`` is the same rules in Python, the tests' oracle):

- An empty value is null. Every predicate is true or false, never SQL NULL (so ``not`` is plain negation);
  a null value, or one that does not read as the literal's kind, makes every predicate on it false
  (``notIn``, ``doesNotContain``, ``notEqualTo``, ``!=`` included); only ``isNull`` is true for it.
- Against a number literal the value is a number when it matches ``NUMBER_PATTERN`` (optional sign, ASCII
  digits, an optional fraction; no exponent, no spaces) and has at most ``MAX_NUMBER_LENGTH`` characters;
  it is compared exactly as ``numeric``.
- Against ``date(...)`` (and in every ``occurs``) the value is a date when it is ``YYYY-MM-DD`` naming a
  real day of years 0001-9999 (2026-02-30 is not one, 2024-02-29 is), optionally followed by a time
  ``[T ]HH:MM[:SS[.fff]][Z|±HH[:MM]]``; the time is checked for form and ignored: a value's day is the day
  written. Dates are compared as their ``YYYY-MM-DD`` text in byte order, which is date order, so no cast
  runs and an invalid date cannot fail at run time.
- Against ``true``/``false`` the value is a boolean when it is ``true`` or ``false`` in any case.
- Against a string, text compared in byte order (``COLLATE "C"``: UTF-8 byte order is code point order).
- String methods compare text; ``false`` as a second argument lowers both sides with PostgreSQL's
  ``lower()`` (the database's LC_CTYPE; with C.UTF-8 the Unicode simple case mapping).
- ``like``: ``%`` any run of characters, ``_`` one character, ``\\`` escapes the next one (the parser
  allows only ``\\%``, ``\\_`` and ``\\\\``, so the pattern can never be invalid), case-sensitive.
- ``inSegment("12")``: the profile's identity is a member of the table ``segment_tables["12"]``.
- Dates and "now": ``today`` is ``now``'s UTC date; ``now`` means today too (the units are days at the
  finest), ``yesterday``/``tomorrow`` the days around it. With B = the anchor day moved ``N`` units
  before (or after) it (months and years clamp the day to the month's end, as PostgreSQL's
  ``date - interval`` does):

  - ``X occurs <= N days before now``: B <= day(X) <= today; ``<``: B < day(X) <= today;
    ``= N``: day(X) = B; ``!= N``: day(X) <> B; ``>= N``: day(X) <= B; ``> N``: day(X) < B.
  - ``after`` mirrors it: ``<= N days after now``: today <= day(X) <= B, ``>= N``: day(X) >= B, ...
  - ``X occurs between a and b``: a <= day(X) <= b (both inclusive).
  - ``X occurs last|this|next day|week|month|year``: day(X) within that calendar period (weeks start on
    Monday); ``X occurs today`` (yesterday, tomorrow, now): day(X) is that day.

  A range bounded on both sides by real days, at most ``MAX_LISTED_DAYS`` long (``occurs <= 30 days before
  now``, ``between``, a period, ``today``), is compiled as a lookup of the value's first ten characters in
  the list of its days (a text[] parameter), and the date pattern runs only on a longer value (one with a
  time): the same rows, without a regular expression on each row the range keeps (``listed_days``).

  A bound beyond year 1-9999 becomes a sentinel text below (``0000-00-00``) or above (``9999-99-99``) every
  valid date, which no value equals.
"""

from __future__ import annotations

import calendar
import dataclasses
import datetime
from collections.abc import Callable, Mapping

from gateway.ingest.csvparse import fold_name
from gateway.segmentation import pql
from gateway.segmentation.pql import ExpressionError

MAX_NUMBER_LENGTH = 1000  # a longer value is not a number (and numeric's digit limits stay far away)
NUMBER_PATTERN = "[+-]?([0-9]+([.][0-9]*)?|[.][0-9]+)"
DATE_PATTERN = ("[0-9]{4}-((0[1-9]|1[0-2])-(0[1-9]|1[0-9]|2[0-8])|(0[13-9]|1[0-2])-(29|30)|(0[13578]|1[02])-31"
                "|02-29)([T ]([01][0-9]|2[0-3]):[0-5][0-9](:[0-5][0-9]([.][0-9]+)?)?(Z|[+-][0-9]{2}(:?[0-9]{2})?)?)?")
BEFORE_ALL_DATES = "0000-00-00"
AFTER_ALL_DATES = "9999-99-99"
_SQL_OPERATORS = {"=": "=", "!=": "<>", "<": "<", "<=": "<=", ">": ">", ">=": ">="}


@dataclasses.dataclass(frozen=True)
class Compiled:
    sql: str
    params: list


def compile_predicate(node: pql.Node, *, attribute_index: Callable[[str], int | None],
                      segment_tables: Mapping[str, str], now: datetime.datetime,
                      first_param: int = 1) -> Compiled:
    """The SQL of ``node`` over the row ``p`` and its parameters ``$first_param``, ``$first_param + 1``, ...
    ExpressionError at the position of an attribute ``attribute_index`` does not know or of an ``inSegment``
    whose argument is not in ``segment_tables``."""
    compiler = _Compiler(attribute_index, segment_tables, utc_today(now), first_param)
    return Compiled(compiler.node(node), compiler.params)


def utc_today(now: datetime.datetime) -> datetime.date:
    """``now``'s date in UTC (a naive ``now`` is taken as UTC)."""
    if now.tzinfo is None:
        return now.date()
    return now.astimezone(datetime.timezone.utc).date()


# --- dates ----------------------------------------------------------------------------------------------

def anchor_day(name: str, today: datetime.date) -> str:
    return _add_days(today, {"now": 0, "today": 0, "yesterday": -1, "tomorrow": 1}[name])


def _add_days(day: datetime.date, days: int) -> str:
    ordinal = day.toordinal() + days
    if ordinal < 1:
        return BEFORE_ALL_DATES
    if ordinal > datetime.date.max.toordinal():
        return AFTER_ALL_DATES
    return datetime.date.fromordinal(ordinal).isoformat()


def _add_months(day: datetime.date, months: int, *, clamp_day: bool = True) -> str:
    index = day.year * 12 + day.month - 1 + months
    year, month = divmod(index, 12)
    if year < 1:
        return BEFORE_ALL_DATES
    if year > 9999:
        return AFTER_ALL_DATES
    last = calendar.monthrange(year, month + 1)[1]
    return datetime.date(year, month + 1, min(day.day, last) if clamp_day else 1).isoformat()


def shift(day: datetime.date, amount: int, unit: str) -> str:
    """``day`` moved ``amount`` (may be negative) days/weeks/months/years, ISO text or a sentinel."""
    if unit == "days":
        return _add_days(day, amount)
    if unit == "weeks":
        return _add_days(day, 7 * amount)
    return _add_months(day, amount * (12 if unit == "years" else 1))


def _period(today: datetime.date, which: str, period: str) -> tuple[str, str]:
    """The first and last day of last/this/next day/week/month/year."""
    step = {"last": -1, "this": 0, "next": 1}[which]
    if period == "day":
        day = _add_days(today, step)
        return day, day
    if period == "week":
        monday = today.toordinal() - today.weekday() + 7 * step
        return (_add_days(datetime.date.fromordinal(1), monday - 1),
                _add_days(datetime.date.fromordinal(1), monday + 5))
    months = 1 if period == "month" else 12
    base = today.replace(day=1) if period == "month" else today.replace(month=1, day=1)
    first = _add_months(base, step * months, clamp_day=False)
    after = _add_months(base, (step + 1) * months, clamp_day=False)
    if after in (BEFORE_ALL_DATES, AFTER_ALL_DATES):
        return first, "9999-12-31" if after == AFTER_ALL_DATES else after
    return first, _add_days(datetime.date.fromisoformat(after), -1)


def date_conditions(node: pql.Node, today: datetime.date) -> list[tuple[str, str]]:
    """The conditions ``(operator, YYYY-MM-DD or sentinel)`` a value's day must all meet for an occurs
    predicate (see the module docstring)."""
    if isinstance(node, pql.OccursOn):
        return [("=", anchor_day(node.anchor.name, today))]
    if isinstance(node, pql.OccursBetween):
        return [(">=", _bound(node.start, today)), ("<=", _bound(node.end, today))]
    if isinstance(node, pql.OccursPeriod):
        first, last = _period(today, node.which, node.period)
        return [(">=", first), ("<=", last)]
    assert isinstance(node, pql.OccursRelative)
    anchor = anchor_day(node.anchor.name, today)
    if anchor in (BEFORE_ALL_DATES, AFTER_ALL_DATES):  # only with a "now" at the very ends of the calendar
        return [("=", anchor)]
    sign = -1 if node.direction == "before" else 1
    bound = shift(datetime.date.fromisoformat(anchor), sign * node.amount, node.unit)
    near = {"<=": "<=", "<": "<"}  # within N units of the anchor, on the anchor's side of the bound
    if node.op in near:
        if node.direction == "before":
            return [(">=" if node.op == "<=" else ">", bound), ("<=", anchor)]
        return [(">=", anchor), (node.op, bound)]
    if node.op in ("=", "!="):
        return [(node.op, bound)]
    # >= / >: at least (more than) N units away from the anchor
    strict = node.op == ">"
    if node.direction == "before":
        return [("<" if strict else "<=", bound)]
    return [(">" if strict else ">=", bound)]


MAX_LISTED_DAYS = 1000


def listed_days(conditions: list[tuple[str, str]]) -> list[str] | None:
    """Every real day that meets ``conditions`` (``date_conditions``), in order, when they bound a range of
    at most ``MAX_LISTED_DAYS`` days between real dates (``occurs <= 30 days before now``, ``between``, a
    period, ``today``); else None. Such a range is compiled as a lookup in this list, which costs a
    fraction of the date pattern's regular expression on each row the range keeps."""
    low = high = None
    for op, bound in conditions:
        try:
            day = datetime.date.fromisoformat(bound)
        except ValueError:  # a sentinel beyond the calendar
            return None
        if op in (">=", ">", "="):
            low = day.toordinal() + (op == ">")
        if op in ("<=", "<", "="):
            high = day.toordinal() - (op == "<")
        if op == "!=":
            return None
    if low is None or high is None or high - low >= MAX_LISTED_DAYS:
        return None
    low, high = max(low, 1), min(high, datetime.date.max.toordinal())
    return [datetime.date.fromordinal(n).isoformat() for n in range(low, high + 1)]


def _bound(value: pql.Date | pql.Anchor, today: datetime.date) -> str:
    if isinstance(value, pql.Date):
        return value.value.isoformat()
    return anchor_day(value.name, today)


# --- SQL ------------------------------------------------------------------------------------------------

class _Compiler:
    def __init__(self, attribute_index: Callable[[str], int | None], segment_tables: Mapping[str, str],
                 today: datetime.date, first_param: int) -> None:
        self.attribute_index = attribute_index
        self.segment_tables = segment_tables
        self.today = today
        self.first_param = first_param
        self.params: list = []
        self.attributes: dict[str, str] = {}  # folded name -> its SQL

    def param(self, value: object, cast: str) -> str:
        self.params.append(value)
        return f"${self.first_param + len(self.params) - 1}::{cast}"

    def value(self, attribute: pql.Attribute) -> str:
        folded = fold_name(attribute.name)
        if folded not in self.attributes:
            index = self.attribute_index(attribute.name)
            if index is None:
                raise ExpressionError(f"unknown attribute {attribute.name!r}", attribute.position)
            self.attributes[folded] = f"p.attrs[{self.param(index, 'int')}]"
        return self.attributes[folded]

    def node(self, node: pql.Node) -> str:
        if isinstance(node, pql.And):
            return "(" + " AND ".join(self.node(item) for item in node.items) + ")"
        if isinstance(node, pql.Or):
            return "(" + " OR ".join(self.node(item) for item in node.items) + ")"
        if isinstance(node, pql.Not):
            return f"(NOT {self.node(node.operand)})"
        if isinstance(node, pql.InSegment):
            table = self.segment_tables.get(node.segment)
            if table is None:
                raise ExpressionError(f"unknown segment {node.segment!r}", node.position)
            return f"EXISTS (SELECT 1 FROM {table} s WHERE s.identity = p.identity)"
        if isinstance(node, pql.NullTest):
            return f"(COALESCE({self.value(node.attribute)}, '') {'=' if node.is_null else '<>'} '')"
        if isinstance(node, pql.Compare):
            return self.typed(node.attribute, node.value, lambda v: f"{v} {_SQL_OPERATORS[node.op]} "
                              f"{self.literal(node.value)}")
        if isinstance(node, pql.Membership):
            return self.membership(node)
        if isinstance(node, pql.StringTest):
            return self.string_test(node)
        if isinstance(node, pql.Like):
            v = self.value(node.attribute)
            return f"(CASE WHEN {v} <> '' THEN {v} LIKE {self.param(node.pattern.value, 'text')} ELSE false END)"
        v = self.value(node.attribute)
        days = listed_days(date_conditions(node, self.today))
        if days is not None:
            return self.date_listed(v, days)
        conditions = [f"substr({v}, 1, 10) COLLATE \"C\" {_SQL_OPERATORS[op]} {self.param(bound, 'text')}"
                      for op, bound in date_conditions(node, self.today)]
        return self.date_guarded(v, " AND ".join(conditions))

    def literal(self, literal: pql.Literal) -> str:
        if isinstance(literal, pql.Number):
            return self.param(literal.value, "numeric")
        if isinstance(literal, pql.Boolean):
            return self.param(literal.value, "boolean")
        if isinstance(literal, pql.Date):
            return self.param(literal.value.isoformat(), "text")
        return self.param(literal.value, "text")

    def typed(self, attribute: pql.Attribute, kind: pql.Literal, test: Callable[[str], str]) -> str:
        """``test`` applied to the attribute read as ``kind``'s type, false when it does not read so."""
        v = self.value(attribute)
        if isinstance(kind, pql.Number):
            number = test(f"{v}::numeric")
            return (f"(CASE WHEN {v} ~ '^{NUMBER_PATTERN}$' AND length({v}) <= {MAX_NUMBER_LENGTH} "
                    f"THEN {number} ELSE false END)")
        if isinstance(kind, pql.Date):
            return self.date_guarded(v, test(f'substr({v}, 1, 10) COLLATE "C"'))
        if isinstance(kind, pql.Boolean):
            boolean = test(f"(lower({v}) = 'true')")
            return f"(CASE WHEN lower({v}) IN ('true', 'false') THEN {boolean} ELSE false END)"
        text = test(f'({v} COLLATE "C")')
        return f"(CASE WHEN {v} <> '' THEN {text} ELSE false END)"

    def date_guarded(self, v: str, test: str) -> str:
        """``test`` (on the value's first ten characters as text: it cannot fail) and then whether ``v`` is a
        valid date: the costly check (a regular expression, ~1 µs) runs only on the rows the cheap test keeps.
        The leap-day check's cast runs only on a value the pattern accepted."""
        return f"(CASE WHEN {test} THEN {self.date_valid(v)} ELSE false END)"

    @staticmethod
    def date_valid(v: str) -> str:
        """Whether ``v`` is a valid date (with an optional time). The leap-day check's cast runs only on a
        value the pattern accepted."""
        year = f"substr({v}, 1, 4)::int"
        leap = f"(({year}) % 4 = 0 AND (({year}) % 100 <> 0 OR ({year}) % 400 = 0))"
        return (f"(CASE WHEN {v} ~ '^{DATE_PATTERN}$' AND left({v}, 4) <> '0000' "
                f"THEN substr({v}, 6, 5) <> '02-29' OR {leap} ELSE false END)")

    def date_listed(self, v: str, days: list[str]) -> str:
        """A value whose day is one of ``days`` (every real day of a bounded range, ``listed_days``): its first
        ten characters are one of them (a hashed array lookup, no regular expression) and it is that date
        alone, or a date with a time the pattern accepts. The same rows as ``date_guarded`` with the range's
        conditions: a value whose first ten characters are in the range but not a real day is in neither."""
        listed = f'substr({v}, 1, 10) COLLATE "C" = ANY({self.param(days, "text[]")})'
        exact = f"(CASE WHEN length({v}) = 10 THEN true ELSE {self.date_valid(v)} END)"
        return f"(CASE WHEN {listed} THEN {exact} ELSE false END)"

    def membership(self, node: pql.Membership) -> str:
        items = node.values.items
        kind = items[0] if items else pql.Text("", node.values.position)
        if isinstance(kind, pql.Number):
            array = self.param([item.value for item in items], "numeric[]")
        elif isinstance(kind, pql.Boolean):
            array = self.param([item.value for item in items], "boolean[]")
        elif isinstance(kind, pql.Date):
            array = self.param([item.value.isoformat() for item in items], "text[]")
        else:
            array = self.param([item.value for item in items], "text[]")
        negation = "NOT " if node.negated else ""
        return self.typed(node.attribute, kind, lambda v: f"{negation}({v} = ANY({array}))")

    def string_test(self, node: pql.StringTest) -> str:
        raw = self.value(node.attribute)
        v, s = raw, self.param(node.argument.value, "text")
        if not node.case_sensitive:
            v, s = f"lower({v})", f"lower({s})"
        method = node.method
        negated = method.startswith("doesNot")
        if method in ("contains", "doesNotContain"):
            test = f"strpos({v}, {s}) > 0"
        elif method in ("startsWith", "doesNotStartWith"):
            test = f"starts_with({v}, {s})"
        elif method in ("endsWith", "doesNotEndWith"):
            test = f"right({v}, length({s})) = {s}"
        elif method == "equals":
            test = f"{v} = {s}"
        else:
            test = f"{v} <> {s}"
        if negated:
            test = f"NOT ({test})"
        return f"(CASE WHEN {raw} <> '' THEN {test} ELSE false END)"

