"""The one rule for column names (gateway.ingest.csvparse.fold_name) and the one rule for identities
(gateway.ingest.upload.normalise_identity), on names and values beyond ASCII."""

import pytest

from gateway.ingest.csvparse import CsvHeaderError, CsvStreamParser, fold_name
from gateway.ingest.upload import ColumnRules, normalise_identity, plan_columns

RULES = ColumnRules(ids=None, max_attributes=1000)


@pytest.mark.parametrize("one, other, same", [
    ("Straße", "STRASSE", True),  # full case folding: ß is ss (str.lower would keep ß)
    ("EMAIL", "email", True),
    ("ΣΊΣΥΦΟΣ", "σίσυφος", True),  # final sigma folds like any sigma
    ("İD", "id", False),  # dotted capital I folds to i + combining dot, not to i
    ("ıd", "id", False),  # dotless i stays itself
])
def test_column_names_compare_by_full_case_folding(one, other, same):
    assert (fold_name(one) == fold_name(other)) is same


def test_the_parser_and_the_column_plan_use_the_same_rule():
    with pytest.raises(CsvHeaderError, match="duplicate"):
        CsvStreamParser().feed("Straße,STRASSE\n".encode())
    plan = plan_columns(["id", "STRASSE"], None, [], ColumnRules(ids="straße", max_attributes=1000))
    assert (plan.identity_index, plan.identity_attribute) == (1, "STRASSE")
    later = plan_columns(["email", "STRASSE"], "email", ["email", "Straße"], RULES)
    assert later.attributes == ("email", "Straße")  # the known attribute, not a new one
    assert later.source_index == (0, 1)


@pytest.mark.parametrize("text, lowercase, expected", [
    ("\u00a0ÉLODIE@Example.com\t", True, "élodie@example.com"),
    ("\x1cÉLODIE@Example.com\u2003", False, "ÉLODIE@Example.com"),
])
def test_identities_are_trimmed_of_unicode_space_and_lowercased_in_email_columns(text, lowercase, expected):
    assert normalise_identity(text, lowercase) == expected
