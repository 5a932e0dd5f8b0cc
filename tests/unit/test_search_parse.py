"""The entity search string as terms (gateway.segmentation.search.parse): each operator, and any text at all
parses (what is not an operator is text for PostgreSQL's parser, passed as a parameter)."""

import pytest
from hypothesis import given, strategies as st

from gateway.segmentation.search import MAX_TERMS, Search, Term, TooManyTerms, parse


def test_words_prefixes_phrases_fields_and_or():
    assert parse('summer sale* "gold buyers" name:vip description:"in France" id:12 OR churn') == Search((
        (Term("any", "word", "summer"), Term("any", "prefix", "sale"), Term("any", "phrase", "gold buyers"),
         Term("name", "word", "vip"), Term("description", "phrase", "in France"), Term("id", "word", "12")),
        (Term("any", "word", "churn"),)))


def test_what_is_not_an_operator_is_text():
    assert parse("colour:red or a:b:c") == Search(((Term("any", "word", "colour:red"), Term("any", "word", "or"),
                                                   Term("any", "word", "a:b:c")),))
    assert parse('NAME:x "unclosed') == Search(((Term("name", "word", "x"), Term("any", "phrase", "unclosed")),))
    assert parse("OR OR a OR") == Search(((Term("any", "word", "a"),),))
    assert parse("* name:* id:3*") == Search(((Term("any", "word", "*"), Term("name", "word", "*"),
                                               Term("id", "word", "3*")),))
    assert parse("   ") == Search(())


def test_too_many_terms():
    parse(" ".join(["w"] * MAX_TERMS))
    with pytest.raises(TooManyTerms):
        parse(" ".join(["w"] * (MAX_TERMS + 1)))


@given(st.text(max_size=200))
def test_any_text_parses_into_terms_of_known_fields_and_kinds(text):
    try:
        search = parse(text)
    except TooManyTerms:
        return
    for group in search.groups:
        assert group
        for term in group:
            assert term.field in ("any", "name", "description", "id") and term.kind in ("word", "prefix", "phrase")
