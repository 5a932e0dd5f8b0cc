"""The PQL parser: every construct gives the tree it should; every error is an ExpressionError with the
position of what is wrong and a message saying what; hostile and huge input is a clean error, never a crash."""

from __future__ import annotations

import datetime
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.segmentation import pql
from gateway.segmentation.pql import (And, Anchor, Array, Attribute, Boolean, Compare, Date, ExpressionError,
                                      InSegment, Like, Membership, Not, NullTest, Number, OccursBetween, OccursOn,
                                      OccursPeriod, OccursRelative, Or, StringTest, Text, attributes_used, parse,
                                      segments_used)


def test_comparisons_and_literals():
    assert parse('Country = "US"') == Compare(Attribute("Country", 0), "=", Text("US", 10), 0)
    assert parse("a != -1.50") == Compare(Attribute("a", 0), "!=", Number(Decimal("-1.50"), 5), 0)
    assert parse("a>=10") == Compare(Attribute("a", 0), ">=", Number(Decimal(10), 3), 0)
    assert parse("a < date(2026, 11, 30)") == Compare(Attribute("a", 0), "<", Date(datetime.date(2026, 11, 30), 4), 0)
    assert parse("a = TRUE") == Compare(Attribute("a", 0), "=", Boolean(True, 4), 0)
    assert parse("`first name` <= \"x\"").attribute == Attribute("first name", 0)
    assert parse("`a``b` > \"\"").attribute.name == "a`b"
    assert parse("Straße = 1").attribute.name == "Straße"
    for op in pql.COMPARISONS:
        assert parse(f"a {op} 1").op == op


def test_string_escapes_are_json_escapes():
    assert parse(r'a = "q\"b\\s\/n\n\t\r\b\f\u00e9\ud83d\ude00"').value.value == 'q"b\\s/n\n\t\r\b\f\u00e9\U0001F600'
    assert parse('a = "日本 \'quoted\'"').value.value == "日本 'quoted'"


def test_membership_methods_like_and_null_tests():
    assert parse('a in ["US", "CA"]') == Membership(Attribute("a", 0), Array((Text("US", 6), Text("CA", 12)), 5),
                                                   False, 0)
    assert parse("a notIn [1, 2]").negated is True
    assert parse("a in []").values.items == ()
    assert parse('a.contains("x")') == StringTest(Attribute("a", 0), "contains", Text("x", 11), True, 0)
    assert parse('a.startsWith("x", false)').case_sensitive is False
    assert parse('a.ENDSWITH("x", true)').method == "endsWith"
    for method in pql.STRING_METHODS:
        assert parse(f'a.{method}("x")').method == method
    assert parse('a like "%a\\\\_b"') == Like(Attribute("a", 0), Text("%a\\_b", 7), 0)
    assert parse("a.isNull()") == NullTest(Attribute("a", 0), True, 0)
    assert parse("a.isNotNull( )") == NullTest(Attribute("a", 0), False, 0)


def test_occurs_forms():
    assert parse("a occurs <= 30 days before now") == OccursRelative(Attribute("a", 0), "<=", 30, "days", "before",
                                                                    Anchor("now", 27), 0)
    assert parse("a occurs = 1 week after Today").unit == "weeks"
    assert parse("a occurs > 2 months before yesterday").anchor.name == "yesterday"
    assert parse("a occurs >= 1 year before tomorrow").unit == "years"
    assert parse("a occurs between date(2026, 1, 1) and now") == OccursBetween(
        Attribute("a", 0), Date(datetime.date(2026, 1, 1), 17), Anchor("now", 38), 0)
    assert parse("a occurs last week") == OccursPeriod(Attribute("a", 0), "last", "week", 0)
    assert parse("a occurs next year").which == "next"
    assert parse("a occurs today") == OccursOn(Attribute("a", 0), Anchor("today", 9), 0)


def test_logic_precedence_not_over_and_over_or():
    a, b, c = (parse(f"{name} = 1") for name in "abc")
    assert parse("a = 1 or b = 1 and c = 1") == Or((a, _moved(And((_moved(b, 9), _moved(c, 19)), 9), 9)), 0)
    tree = parse("not a = 1 and b = 1")
    assert isinstance(tree, And) and isinstance(tree.items[0], Not)
    tree = parse("(a = 1 or b = 1) and !(c = 1)")
    assert isinstance(tree, And) and isinstance(tree.items[0], Or) and isinstance(tree.items[1], Not)
    assert isinstance(parse("a = 1 AND b = 1 And c = 1"), And) and len(parse("a = 1 and b = 1 and c = 1").items) == 3
    assert parse("!!(a = 1)") == Not(Not(_moved(a, 3), 1), 0)
    assert parse('inSegment("12")') == InSegment("12", 0)


def _moved(node, position):
    """``node`` as parsed at another offset (positions of children shift too)."""
    import dataclasses
    shift = position - node.position
    changes = {"position": position}
    for field in dataclasses.fields(node):
        value = getattr(node, field.name)
        if hasattr(value, "position") and field.name != "position":
            changes[field.name] = _moved(value, value.position + shift)
        elif isinstance(value, tuple) and value and hasattr(value[0], "position"):
            changes[field.name] = tuple(_moved(item, item.position + shift) for item in value)
    return dataclasses.replace(node, **changes)


def test_attributes_and_segments_used():
    tree = parse('a = 1 and (A.isNull() or `c d` like "x" or inSegment("12") or B in [1]) and not inSegment("7")'
                 ' and inSegment("12")')
    assert attributes_used(tree) == ["a", "c d", "B"]
    assert segments_used(tree) == ["12", "7"]
    assert attributes_used(parse('inSegment("1")')) == []


@pytest.mark.parametrize("text, position, message", [
    ('a = "abc', 4, "unterminated string"),
    ('a = "ab\\', 4, "unterminated string"),
    ("`abc = 1", 0, "unterminated name in backticks"),
    ("foo(1)", 0, "unknown function 'foo'"),
    ('a.foo("x")', 2, "unknown method 'foo'"),
    ('a.matches("x")', 2, "matches (regular expressions) is not supported"),
    ("(a = 1", 6, "expected ')' to close the '(' at position 0, found the end of the expression"),
    ("((a = 1) or (b = 2)", 19, "expected ')' to close the '(' at position 0, found the end of the expression"),
    ('inSegment("1"', 13, "expected ')', found the end of the expression"),
    ("a = 1 )", 6, "unexpected ')' after a complete expression"),
    ("a = 1 b = 2", 6, "unexpected 'b' after a complete expression"),
    ("a = 1;", 5, "unexpected character ';'"),
    ("a == 1", 2, "unknown operator '=='"),
    ("a <> 1", 2, "unknown operator '<>'"),
    ("a =! 1", 2, "unknown operator '=!'"),
    ("", 0, "empty expression"),
    ("   ", 0, "empty expression"),
    ("a", 1, "expected a comparison, in, notIn, like, occurs or a method call after the attribute, "
             "found the end of the expression"),
    ("a = ", 4, "expected a value (a string, number, true, false or date(y, m, d)), found the end of the expression"),
    ("a = b", 4, "expected a value (a string, number, true, false or date(y, m, d)), found 'b'"),
    ("and = 1", 0, "expected an attribute name (write a name that is a keyword in backticks), found 'and'"),
    ("a < true", 2, "true and false can only be compared with = or !=, not <"),
    ("a = date(2026, 2, 30)", 4, "date(2026, 2, 30) is not a date"),
    ("a = date(2026, 2)", 16, "expected ',', found ')'"),
    ('a in [1, "x"]', 9, "a list mixes kinds of values (strings, numbers, booleans, dates)"),
    ("a in 1", 5, "expected '[' starting a list of values, found '1'"),
    ('a like "a\\\\b"', 7, "in a like pattern a backslash must be followed by %, _ or a backslash"),
    ('a like "a\\\\"', 7, "in a like pattern a backslash must be followed by %, _ or a backslash"),
    ('a = "\\x"', 5, "invalid escape '\\x' in a string"),
    ('a = "\\u12"', 5, "invalid \\u escape in a string (four hex digits expected)"),
    ('a = "\\u0000"', 5, "a string cannot contain U+0000"),
    ('a = "\\ud800"', 5, "a string cannot contain an unpaired surrogate"),
    ('a = "x\x00"', 6, "a string cannot contain '\\x00'"),
    ("a occurs <= 3 days", 18, "expected before or after, found the end of the expression"),
    ("a occurs <= 3 hours before now", 14, "expected days, weeks, months or years, found 'hours'"),
    ("a occurs <= 1.5 days before now", 12, "expected a whole number of days, weeks, months or years, found '1.5'"),
    ("a occurs last fortnight", 14, "expected day, week, month or year, found 'fortnight'"),
    ("a occurs soon", 9, "expected a comparison, between, last/this/next or a day after occurs, found 'soon'"),
    ('a.contains("x", 1)', 16, "expected true or false (case sensitivity), found '1'"),
    ("a.isNull(1)", 9, "expected ')' (isNull takes no argument), found '1'"),
    ("not", 3, "expected an attribute name (write a name that is a keyword in backticks), "
               "found the end of the expression"),
    ("a = 1 and", 9, "expected an attribute name (write a name that is a keyword in backticks), "
                     "found the end of the expression"),
    ("a = 1 -- comment", 6, "unexpected character '-'"),
    ("a = 1 /* x */", 6, "unexpected character '/'"),
    ("a = $$x$$", 4, "unexpected character '$'"),
    ("a = 'x'", 4, "unexpected character \"'\""),
    ("a = 1" + "0" * 1000, 4, "a number longer than 1000 characters"),
])
def test_errors_have_position_and_message(text, position, message):
    with pytest.raises(ExpressionError) as raised:
        parse(text)
    assert (raised.value.position, raised.value.message) == (position, message)
    assert str(raised.value) == f"{message} (at position {position})"


def test_ten_thousand_nested_parentheses_are_a_clean_error():
    for text in ["(" * 10_000 + "a = 1" + ")" * 10_000, "not " * 10_000 + "a = 1", "!" * 10_000 + "(a = 1)",
                 "(" * 10_000]:
        with pytest.raises(ExpressionError) as raised:
            parse(text)
        assert raised.value.message == f"nested more than {pql.MAX_DEPTH} levels deep"
        assert raised.value.position == pql.MAX_DEPTH * (4 if text.startswith("not") else 1)


def test_the_limits_themselves_parse():
    assert isinstance(parse("(" * pql.MAX_DEPTH + "a = 1" + ")" * pql.MAX_DEPTH), Compare)
    big = 'a = "' + "x" * (pql.MAX_LENGTH - 6) + '"'
    assert len(parse(big).value.value) == pql.MAX_LENGTH - 6
    with pytest.raises(ExpressionError) as raised:
        parse(big + " ")
    assert (raised.value.position, raised.value.message) == (pql.MAX_LENGTH, "an expression longer than 65536 characters")
    many = "or ".join(["a=1"] * pql.MAX_PREDICATES)  # 60,000 characters
    assert len(parse(many).items) == pql.MAX_PREDICATES
    with pytest.raises(ExpressionError) as raised:
        parse(many + "or b=1")
    assert raised.value.message == f"more than {pql.MAX_PREDICATES} conditions"
    assert raised.value.position == len(many) + 3


def test_hostile_text_inside_strings_is_just_text():
    for payload in ["'; DROP TABLE p; --", "$$", "*/ OR 1=1 /*", "\\u0027", "') OR ('1'='1", "`", "$1"]:
        text = 'a = "' + payload.replace("\\", "\\\\") + '"'
        assert parse(text).value.value == payload


@settings(max_examples=300, deadline=None, derandomize=True)
@given(st.text(max_size=60) | st.lists(st.sampled_from(['"', "'", "`", "(", ")", "[", "]", "a", "=", "1", " and ",
                                                        " or ", "not ", "!", ".contains(", "\\", ";", "$$", "--",
                                                        "/*", "occurs ", "<= ", "3 days", " before now", ",",
                                                        "date(", "inSegment(", '"x"']), max_size=20).map("".join))
def test_any_text_parses_or_is_a_clean_error_inside_it(text):
    try:
        tree = parse(text)
    except ExpressionError as error:
        assert 0 <= error.position <= len(text)
        assert error.message
    else:
        attributes_used(tree)
        segments_used(tree)
