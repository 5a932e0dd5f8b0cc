"""``file_holds``: whether an export file holds one of an erasure's identities in its identity column, read
as written (csv with quoted fields, csv.gz, ndjson); None for a file without an identity column."""

import csv
import gzip
import io
import json

from gateway.jobs.export_files import _may_hold, file_holds

ROWS = [["a@x.com", "say \"hi\"\nthere"], ['odd,"one"@x.com', "b@x.com"], ["c@x.com", "ann@example.com"],
        ["zoë@x.com", "ÅLAND"], *([f"user{i}@x.com", f"Name {i}"] for i in range(100_000))]


def write(tmp_path, file_format: str, header: list[str], rows: list[list[str]]):
    path = tmp_path / f"export.{file_format}"
    if file_format == "ndjson":
        path.write_bytes(b"".join(json.dumps(dict(zip(header, row)), ensure_ascii=False).encode() + b"\n"
                                  for row in rows))
        return path
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows([header, *rows])
    data = out.getvalue().encode()
    path.write_bytes(gzip.compress(data) if file_format == "csv.gz" else data)
    return path


def test_the_identity_column_is_searched_in_every_format(tmp_path):
    for file_format in ("csv", "csv.gz", "ndjson"):
        path = write(tmp_path, file_format, ["Email", "other"], ROWS)
        assert file_holds(path, file_format, "email", {'odd,"one"@x.com'}) is True, file_format
        assert file_holds(path, file_format, "EMAIL", {"zed@x.com", "c@x.com"}) is True, file_format
        # a value in another column, or part of a quoted field, is not the identity
        assert file_holds(path, file_format, "email", {"ann@example.com", "b@x.com", "there"}) is False, file_format


def test_a_file_without_the_identity_column_cannot_be_searched(tmp_path):
    for file_format in ("csv", "csv.gz", "ndjson"):
        path = write(tmp_path, file_format, ["other"], [[row[1]] for row in ROWS])
        assert file_holds(path, file_format, "email", {"b@x.com"}) is None, file_format


def test_an_empty_or_missing_file_holds_nothing(tmp_path):
    assert file_holds(write(tmp_path, "csv", ["email"], []), "csv", "email", {"a@x.com"}) is False
    assert file_holds(write(tmp_path, "ndjson", ["email"], []), "ndjson", "email", {"a@x.com"}) is False
    assert file_holds(tmp_path / "gone.csv", "csv", "email", {"a@x.com"}) is False


def test_the_fast_pass_finds_every_value_wherever_a_block_ends(tmp_path, monkeypatch):
    """Tiny blocks: a value cut at a block's end is still found; one absent from the file is not (the exact
    parse is then not run); one that may be written quoted or escaped always goes to the exact parse."""
    monkeypatch.setattr("gateway.jobs.export_files.SCAN_BYTES", 7)
    for file_format in ("csv", "csv.gz"):
        path = write(tmp_path, file_format, ["Email", "other"], ROWS[:4] + ROWS[-1:])
        for value in ("a@x.com", "c@x.com", "b@x.com", "user99999@x.com"):
            assert _may_hold(path, file_format, {value, "nobody@x.com"}), (file_format, value)
            assert file_holds(path, file_format, "email", {value}) is (value != "b@x.com"), (file_format, value)
        assert not _may_hold(path, file_format, {"nobody@x.com", "user1@x.com", "a@x.co"}), file_format
        for value in ('odd,"one"@x.com', "zoë@x.com", "back\\slash"):
            assert _may_hold(path, file_format, {value}), (file_format, value)
