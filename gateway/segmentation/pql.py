"""The expression language of segment definitions: a safe subset of PQL (``format: "pql/text"``).

``parse(text)`` turns an expression into a small tree of frozen dataclasses, each node carrying the 0-based
character offset where it starts; every error is an ``ExpressionError(message, position)``. The compiler
(``gateway.segmentation.compiler``) turns the tree into parameterised SQL.

Grammar (keywords, method names and attribute names are case-insensitive; precedence ``not`` > ``and`` >
``or``; parentheses group)::

    expression := conjunction ("or" conjunction)*
    conjunction := unary ("and" unary)*
    unary      := ("not" | "!")* primary
    primary    := "(" expression ")" | "inSegment" "(" STRING ")" | predicate
    predicate  := ATTRIBUTE ( COMPARISON literal                    -- = != < <= > >=
                            | "in" array | "notIn" array
                            | "like" STRING
                            | "." METHOD "(" [STRING ["," BOOLEAN]] ")"
                            | "occurs" occurrence )
    occurrence := COMPARISON INTEGER UNIT ("before" | "after") ANCHOR   -- X occurs <= 30 days before now
                | "between" (date | ANCHOR) "and" (date | ANCHOR)
                | ("last" | "this" | "next") PERIOD                  -- X occurs last week
                | ANCHOR                                             -- X occurs today
    literal    := STRING | NUMBER | "true" | "false" | date
    date       := "date" "(" INTEGER "," INTEGER "," INTEGER ")"
    array      := "[" [literal ("," literal)*] "]"                   -- one kind of literal per array
    UNIT       := day(s) | week(s) | month(s) | year(s);   PERIOD := day | week | month | year
    ANCHOR     := now | today | yesterday | tomorrow
    METHOD     := contains | startsWith | endsWith | doesNotContain | doesNotStartWith | doesNotEndWith
                | equals | notEqualTo | isNull | isNotNull

- An ATTRIBUTE is a plain word (letters, digits, ``_``; not starting with a digit) or any name in
  backticks (a backtick inside is doubled: ```a``b``` is ``a`b``). The words ``and``, ``or``, ``not``,
  ``true`` and ``false`` are only attribute names in backticks.
- STRING is double-quoted with JSON escapes (``\\" \\\\ \\/ \\b \\f \\n \\r \\t \\uXXXX``); U+0000 is refused
  (PostgreSQL text cannot hold it). NUMBER is ``-?digits[.digits]``, at most ``MAX_NUMBER_LENGTH`` characters.
- ``like`` patterns: ``%`` any run, ``_`` one character, ``\\`` escapes the next character, which must be
  ``%``, ``_`` or ``\\`` (written ``"a\\\\%"`` inside the JSON-escaped string).
- ``X.matches(...)`` (regular expressions) is not supported: PostgreSQL's regex dialect is not Java's and its
  cost is not bounded by anything here. It is a clean error.
- Bounds: at most ``MAX_LENGTH`` characters, ``MAX_DEPTH`` nested parentheses / ``not``, ``MAX_PREDICATES``
  predicates; beyond them an ExpressionError, never a RecursionError.
"""

from __future__ import annotations

import dataclasses
import datetime
from decimal import Decimal
from typing import Union

from gateway.ingest.csvparse import fold_name

MAX_LENGTH = 64 * 1024  # characters
MAX_DEPTH = 200  # nested parentheses and not/! operators
MAX_PREDICATES = 10_000  # keeps the compiled SQL's parameters far below PostgreSQL's 65535
MAX_NUMBER_LENGTH = 1000  # characters of a number literal (a numeric's digits are bounded too)

COMPARISONS = ("=", "!=", "<", "<=", ">", ">=")
RESERVED = frozenset({"and", "or", "not", "true", "false"})
ANCHORS = ("now", "today", "yesterday", "tomorrow")
UNITS = {"day": "days", "days": "days", "week": "weeks", "weeks": "weeks", "month": "months",
         "months": "months", "year": "years", "years": "years"}
PERIODS = ("day", "week", "month", "year")
STRING_METHODS = ("contains", "startsWith", "endsWith", "doesNotContain", "doesNotStartWith", "doesNotEndWith",
                  "equals", "notEqualTo")
NULL_METHODS = ("isNull", "isNotNull")
_METHODS = {fold_name(name): name for name in STRING_METHODS + NULL_METHODS}
_OPERATOR_CHARS = "=!<>"
_ESCAPES = {'"': '"', "\\": "\\", "/": "/", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}


class ExpressionError(ValueError):
    """An expression that cannot be parsed or compiled; ``position`` is a 0-based character offset into it."""

    def __init__(self, message: str, position: int) -> None:
        super().__init__(f"{message} (at position {position})")
        self.message = message
        self.position = position


# --- the tree -------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Attribute:
    name: str  # as written (without backticks)
    position: int


@dataclasses.dataclass(frozen=True)
class Text:
    value: str
    position: int


@dataclasses.dataclass(frozen=True)
class Number:
    value: Decimal
    position: int


@dataclasses.dataclass(frozen=True)
class Boolean:
    value: bool
    position: int


@dataclasses.dataclass(frozen=True)
class Date:
    value: datetime.date
    position: int


Literal = Union[Text, Number, Boolean, Date]


@dataclasses.dataclass(frozen=True)
class Array:
    items: tuple[Literal, ...]
    position: int


@dataclasses.dataclass(frozen=True)
class Anchor:
    name: str  # one of ANCHORS, lower case
    position: int


@dataclasses.dataclass(frozen=True)
class Compare:
    """``X op literal``: a number literal reads X as a number, a date literal as an ISO date, else as text."""
    attribute: Attribute
    op: str  # one of COMPARISONS
    value: Literal
    position: int


@dataclasses.dataclass(frozen=True)
class Membership:
    """``X in [...]`` / ``X notIn [...]`` (notIn is true only when X has a value of the items' kind)."""
    attribute: Attribute
    values: Array
    negated: bool
    position: int


@dataclasses.dataclass(frozen=True)
class StringTest:
    attribute: Attribute
    method: str  # one of STRING_METHODS
    argument: Text
    case_sensitive: bool
    position: int


@dataclasses.dataclass(frozen=True)
class Like:
    attribute: Attribute
    pattern: Text
    position: int


@dataclasses.dataclass(frozen=True)
class NullTest:
    attribute: Attribute
    is_null: bool
    position: int


@dataclasses.dataclass(frozen=True)
class OccursRelative:
    """``X occurs <op> <amount> <unit> before|after <anchor>``."""
    attribute: Attribute
    op: str
    amount: int
    unit: str  # days | weeks | months | years
    direction: str  # before | after
    anchor: Anchor
    position: int


@dataclasses.dataclass(frozen=True)
class OccursBetween:
    attribute: Attribute
    start: Date | Anchor
    end: Date | Anchor
    position: int


@dataclasses.dataclass(frozen=True)
class OccursPeriod:
    """``X occurs last|this|next day|week|month|year`` (weeks start on Monday)."""
    attribute: Attribute
    which: str  # last | this | next
    period: str  # one of PERIODS
    position: int


@dataclasses.dataclass(frozen=True)
class OccursOn:
    """``X occurs today`` (or now, yesterday, tomorrow)."""
    attribute: Attribute
    anchor: Anchor
    position: int


@dataclasses.dataclass(frozen=True)
class InSegment:
    segment: str  # as written
    position: int


@dataclasses.dataclass(frozen=True)
class And:
    items: tuple[Node, ...]
    position: int


@dataclasses.dataclass(frozen=True)
class Or:
    items: tuple[Node, ...]
    position: int


@dataclasses.dataclass(frozen=True)
class Not:
    operand: Node
    position: int


Predicate = Union[Compare, Membership, StringTest, Like, NullTest, OccursRelative, OccursBetween, OccursPeriod,
                  OccursOn, InSegment]
Node = Union[Predicate, And, Or, Not]


# --- tokens ---------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True, slots=True)
class Token:
    kind: str  # word, quoted, string, number, op, punct, end
    value: str  # a word as written, a quoted name / string decoded, a number's text, the operator or punctuation
    position: int

    def is_word(self, *words: str) -> bool:
        return self.kind == "word" and self.value.casefold() in words

    def describe(self) -> str:
        if self.kind == "end":
            return "the end of the expression"
        if self.kind == "string":
            return "a string"
        if self.kind == "quoted":
            return "a quoted name"
        return repr(self.value)


def _is_digit(ch: str) -> bool:
    return len(ch) == 1 and "0" <= ch <= "9"


def _is_word_start(ch: str) -> bool:
    return ch == "_" or ch.isalpha()


def _is_word_char(ch: str) -> bool:
    return ch == "_" or ch.isalnum()


def tokenize(text: str) -> list[Token]:
    """The expression's tokens, ending with an ``end`` token at ``len(text)``."""
    tokens: list[Token] = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch in " \t\r\n":
            i += 1
        elif ch == '"':
            value, end = _read_string(text, i)
            tokens.append(Token("string", value, i))
            i = end
        elif ch == "`":
            value, end = _read_quoted(text, i)
            tokens.append(Token("quoted", value, i))
            i = end
        elif _is_digit(ch) or (ch == "-" and _is_digit(text[i + 1:i + 2])):
            end = i + 1
            while end < n and _is_digit(text[end]):
                end += 1
            if text[end:end + 1] == "." and _is_digit(text[end + 1:end + 2]):
                end += 1
                while end < n and _is_digit(text[end]):
                    end += 1
            if end - i > MAX_NUMBER_LENGTH:
                raise ExpressionError(f"a number longer than {MAX_NUMBER_LENGTH} characters", i)
            tokens.append(Token("number", text[i:end], i))
            i = end
        elif _is_word_start(ch):
            end = i + 1
            while end < n and _is_word_char(text[end]):
                end += 1
            tokens.append(Token("word", text[i:end], i))
            i = end
        elif ch in _OPERATOR_CHARS:
            end = i + 1
            while end < n and text[end] in _OPERATOR_CHARS:
                end += 1
            run = text[i:end]
            if run in COMPARISONS:
                tokens.append(Token("op", run, i))
            elif set(run) == {"!"}:  # "!!(…)": one not each
                tokens.extend(Token("op", "!", i + k) for k in range(len(run)))
            else:
                raise ExpressionError(f"unknown operator {run!r}", i)
            i = end
        elif ch in "()[],.":
            tokens.append(Token("punct", ch, i))
            i += 1
        else:
            raise ExpressionError(f"unexpected character {ch!r}", i)
    tokens.append(Token("end", "", n))
    return tokens


def _read_string(text: str, start: int) -> tuple[str, int]:
    """The decoded double-quoted string starting at ``start`` and the offset after its closing quote."""
    out: list[str] = []
    i, n = start + 1, len(text)
    while i < n:
        ch = text[i]
        if ch == '"':
            return "".join(out), i + 1
        if ch == "\\":
            if i + 1 >= n:
                break
            escape = text[i + 1]
            if escape in _ESCAPES:
                out.append(_ESCAPES[escape])
                i += 2
                continue
            if escape != "u":
                raise ExpressionError(f"invalid escape '\\{escape}' in a string", i)
            code = _hex4(text, i)
            i += 6
            if 0xD800 <= code < 0xDC00 and text.startswith("\\u", i):
                low = _hex4(text, i)
                if 0xDC00 <= low < 0xE000:
                    code = 0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00)
                    i += 6
            if 0xD800 <= code < 0xE000:
                raise ExpressionError("a string cannot contain an unpaired surrogate", i - 6)
            if code == 0:
                raise ExpressionError("a string cannot contain U+0000", i - 6)
            out.append(chr(code))
            continue
        if ch == "\x00" or "\ud800" <= ch <= "\udfff":
            raise ExpressionError(f"a string cannot contain {ch!r}", i)
        out.append(ch)
        i += 1
    raise ExpressionError("unterminated string", start)


def _hex4(text: str, i: int) -> int:
    digits = text[i + 2:i + 6]
    if len(digits) != 4 or any(c not in "0123456789abcdefABCDEF" for c in digits):
        raise ExpressionError("invalid \\u escape in a string (four hex digits expected)", i)
    return int(digits, 16)


def _read_quoted(text: str, start: int) -> tuple[str, int]:
    """The backticked name starting at ``start`` (a doubled backtick is one) and the offset after it."""
    out: list[str] = []
    i, n = start + 1, len(text)
    while i < n:
        ch = text[i]
        if ch == "`":
            if text.startswith("`", i + 1):
                out.append("`")
                i += 2
                continue
            if not out:
                raise ExpressionError("an empty name in backticks", start)
            return "".join(out), i + 1
        if ch == "\x00" or "\ud800" <= ch <= "\udfff":
            raise ExpressionError(f"a name cannot contain {ch!r}", i)
        out.append(ch)
        i += 1
    raise ExpressionError("unterminated name in backticks", start)


# --- the parser -----------------------------------------------------------------------------------------

class _Parser:
    """Recursive descent over the tokens. Only ``expression`` and ``unary`` recurse (two frames per level of
    parentheses), and the depth is checked before each level, so MAX_DEPTH bounds the stack."""

    def __init__(self, text: str) -> None:
        self.tokens = tokenize(text)
        self.at = 0
        self.depth = 0
        self.predicates = 0

    @property
    def token(self) -> Token:
        return self.tokens[self.at]

    def advance(self) -> Token:
        token = self.tokens[self.at]
        if token.kind != "end":
            self.at += 1
        return token

    def fail(self, expected: str, token: Token | None = None) -> ExpressionError:
        token = token or self.token
        return ExpressionError(f"expected {expected}, found {token.describe()}", token.position)

    def expect_punct(self, ch: str, what: str | None = None) -> Token:
        if self.token.kind == "punct" and self.token.value == ch:
            return self.advance()
        raise self.fail(what or f"'{ch}'")

    def is_punct(self, ch: str) -> bool:
        return self.token.kind == "punct" and self.token.value == ch

    def enter(self, token: Token) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise ExpressionError(f"nested more than {MAX_DEPTH} levels deep", token.position)

    def parse(self) -> Node:
        if self.token.kind == "end":
            raise ExpressionError("empty expression", 0)
        node = self.expression()
        if self.token.kind != "end":
            raise ExpressionError(f"unexpected {self.token.describe()} after a complete expression",
                                  self.token.position)
        return node

    def expression(self) -> Node:
        disjuncts: list[Node] = []
        while True:
            conjuncts = [self.unary()]
            while self.token.is_word("and"):
                self.advance()
                conjuncts.append(self.unary())
            disjuncts.append(conjuncts[0] if len(conjuncts) == 1 else And(tuple(conjuncts), conjuncts[0].position))
            if not self.token.is_word("or"):
                break
            self.advance()
        return disjuncts[0] if len(disjuncts) == 1 else Or(tuple(disjuncts), disjuncts[0].position)

    def unary(self) -> Node:
        negations: list[Token] = []
        while self.token.is_word("not") or (self.token.kind == "op" and self.token.value == "!"):
            self.enter(self.token)
            negations.append(self.advance())
        token = self.token
        if self.is_punct("("):
            self.enter(token)
            self.advance()
            node = self.expression()
            self.expect_punct(")", f"')' to close the '(' at position {token.position}")
            self.depth -= 1
        else:
            node = self.predicate()
        for negation in reversed(negations):
            node = Not(node, negation.position)
        self.depth -= len(negations)
        return node

    def predicate(self) -> Predicate:
        token = self.token
        self.predicates += 1
        if self.predicates > MAX_PREDICATES:
            raise ExpressionError(f"more than {MAX_PREDICATES} conditions", token.position)
        if token.kind == "word" and self.tokens[self.at + 1].kind == "punct" and self.tokens[self.at + 1].value == "(":
            if not token.is_word("insegment"):
                raise ExpressionError(f"unknown function {token.value!r}", token.position)
            self.advance()
            self.advance()
            argument = self.token
            if argument.kind != "string":
                raise self.fail("a segment id in double quotes")
            self.advance()
            self.expect_punct(")")
            return InSegment(argument.value, token.position)
        attribute = self.attribute()
        token = self.token
        if token.kind == "op" and token.value in COMPARISONS:
            self.advance()
            value = self.literal()
            if isinstance(value, Boolean) and token.value not in ("=", "!="):
                raise ExpressionError(f"true and false can only be compared with = or !=, not {token.value}",
                                      token.position)
            return Compare(attribute, token.value, value, attribute.position)
        if token.is_word("in", "notin"):
            self.advance()
            return Membership(attribute, self.array(), token.is_word("notin"), attribute.position)
        if token.is_word("like"):
            self.advance()
            return Like(attribute, self.like_pattern(), attribute.position)
        if token.is_word("occurs"):
            self.advance()
            return self.occurrence(attribute)
        if self.is_punct("."):
            self.advance()
            return self.method(attribute)
        if token.kind == "op":
            raise ExpressionError(f"operator {token.value!r} cannot follow an attribute", token.position)
        raise self.fail("a comparison, in, notIn, like, occurs or a method call after the attribute")

    def attribute(self) -> Attribute:
        token = self.token
        if token.kind == "quoted" or (token.kind == "word" and token.value.casefold() not in RESERVED):
            self.advance()
            return Attribute(token.value, token.position)
        raise self.fail("an attribute name (write a name that is a keyword in backticks)")

    def literal(self) -> Literal:
        token = self.token
        if token.kind == "string":
            self.advance()
            return Text(token.value, token.position)
        if token.kind == "number":
            self.advance()
            return Number(Decimal(token.value), token.position)
        if token.is_word("true", "false"):
            self.advance()
            return Boolean(token.is_word("true"), token.position)
        if token.is_word("date"):
            return self.date()
        raise self.fail("a value (a string, number, true, false or date(y, m, d))")

    def date(self) -> Date:
        token = self.advance()
        self.expect_punct("(", "'(' after date")
        parts: list[int] = []
        for index in range(3):
            if index:
                self.expect_punct(",")
            number = self.token
            if number.kind != "number" or not number.value.isdigit() or len(number.value) > 4:
                raise self.fail("a year, month or day (an integer)")
            parts.append(int(self.advance().value))
        self.expect_punct(")")
        try:
            return Date(datetime.date(*parts), token.position)
        except ValueError:
            raise ExpressionError(f"date({parts[0]}, {parts[1]}, {parts[2]}) is not a date", token.position) from None

    def array(self) -> Array:
        start = self.token
        self.expect_punct("[", "'[' starting a list of values")
        items: list[Literal] = []
        while not self.is_punct("]"):
            if items:
                self.expect_punct(",", "',' or ']'")
            item = self.literal()
            if items and type(item) is not type(items[0]):
                raise ExpressionError("a list mixes kinds of values (strings, numbers, booleans, dates)",
                                      item.position)
            items.append(item)
        self.advance()
        return Array(tuple(items), start.position)

    def like_pattern(self) -> Text:
        token = self.token
        if token.kind != "string":
            raise self.fail("a pattern in double quotes after like")
        self.advance()
        value = token.value
        i = 0
        while i < len(value):
            if value[i] == "\\":
                if i + 1 >= len(value) or value[i + 1] not in "%_\\":
                    raise ExpressionError("in a like pattern a backslash must be followed by %, _ or a backslash",
                                          token.position)
                i += 1
            i += 1
        return Text(value, token.position)

    def method(self, attribute: Attribute) -> Predicate:
        token = self.token
        if token.kind != "word":
            raise self.fail("a method name")
        if token.value.casefold() == "matches":
            raise ExpressionError("matches (regular expressions) is not supported", token.position)
        name = _METHODS.get(token.value.casefold())
        if name is None:
            raise ExpressionError(f"unknown method {token.value!r}", token.position)
        self.advance()
        self.expect_punct("(", f"'(' after {name}")
        if name in NULL_METHODS:
            self.expect_punct(")", f"')' ({name} takes no argument)")
            return NullTest(attribute, name == "isNull", attribute.position)
        argument = self.token
        if argument.kind != "string":
            raise self.fail(f"a string argument to {name}")
        self.advance()
        case_sensitive = True
        if self.is_punct(","):
            self.advance()
            flag = self.token
            if not flag.is_word("true", "false"):
                raise self.fail("true or false (case sensitivity)")
            self.advance()
            case_sensitive = flag.is_word("true")
        self.expect_punct(")")
        return StringTest(attribute, name, Text(argument.value, argument.position), case_sensitive,
                          attribute.position)

    def anchor(self) -> Anchor:
        token = self.token
        if not token.is_word(*ANCHORS):
            raise self.fail("now, today, yesterday or tomorrow")
        self.advance()
        return Anchor(token.value.casefold(), token.position)

    def occurrence(self, attribute: Attribute) -> Predicate:
        token = self.token
        if token.kind == "op" and token.value in COMPARISONS:
            self.advance()
            amount = self.token
            if amount.kind != "number" or not amount.value.isdigit():
                raise self.fail("a whole number of days, weeks, months or years")
            self.advance()
            unit = self.token
            if unit.kind != "word" or unit.value.casefold() not in UNITS:
                raise self.fail("days, weeks, months or years")
            self.advance()
            direction = self.token
            if not direction.is_word("before", "after"):
                raise self.fail("before or after")
            self.advance()
            return OccursRelative(attribute, token.value, int(amount.value), UNITS[unit.value.casefold()],
                                  direction.value.casefold(), self.anchor(), attribute.position)
        if token.is_word("between"):
            self.advance()
            start = self.date() if self.token.is_word("date") else self.anchor()
            if not self.token.is_word("and"):
                raise self.fail("and")
            self.advance()
            end = self.date() if self.token.is_word("date") else self.anchor()
            return OccursBetween(attribute, start, end, attribute.position)
        if token.is_word("last", "this", "next"):
            self.advance()
            period = self.token
            if not period.is_word(*PERIODS):
                raise self.fail("day, week, month or year")
            self.advance()
            return OccursPeriod(attribute, token.value.casefold(), period.value.casefold(), attribute.position)
        if token.is_word(*ANCHORS):
            return OccursOn(attribute, self.anchor(), attribute.position)
        raise self.fail("a comparison, between, last/this/next or a day after occurs")


def parse(text: str) -> Node:
    """The tree of an expression; ExpressionError (with the offending position) if it is not one."""
    if len(text) > MAX_LENGTH:
        raise ExpressionError(f"an expression longer than {MAX_LENGTH} characters", MAX_LENGTH)
    return _Parser(text).parse()


# --- what a tree uses -----------------------------------------------------------------------------------

def walk(node: Node):
    """Every node of the tree, parents before children, left to right (iterative: depth is bounded anyway)."""
    stack = [node]
    while stack:
        current = stack.pop()
        yield current
        if isinstance(current, (And, Or)):
            stack.extend(reversed(current.items))
        elif isinstance(current, Not):
            stack.append(current.operand)


def attributes_used(node: Node) -> list[str]:
    """The attribute names the expression reads, as first written, first-seen order, deduplicated by fold_name."""
    seen: dict[str, str] = {}
    for current in walk(node):
        attribute = getattr(current, "attribute", None)
        if attribute is not None and fold_name(attribute.name) not in seen:
            seen[fold_name(attribute.name)] = attribute.name
    return list(seen.values())


def segments_used(node: Node) -> list[str]:
    """The ``inSegment("…")`` arguments as written, first-seen order, without repeats."""
    seen: list[str] = []
    for current in walk(node):
        if isinstance(current, InSegment) and current.segment not in seen:
            seen.append(current.segment)
    return seen
