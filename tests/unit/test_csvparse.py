import csv
import io
import json
import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.ingest.csvparse import CsvHeaderError, CsvStreamParser
from tests.conftest import CSV_SPECTRUM as SPECTRUM
from tests.conftest import CSV_SPECTRUM_FILES as SPECTRUM_FILES



def parse(body: bytes, chunks: list[bytes] | None = None, **options):
    """Feed ``body`` (or ``chunks``); return (rows, invalid, header)."""
    invalid: list[tuple[int, str]] = []
    parser = CsvStreamParser(on_invalid=lambda line, reason, raw: invalid.append((line, reason)), **options)
    rows = []
    for chunk in [body] if chunks is None else chunks:
        rows += parser.feed(chunk)
    rows += parser.finish()
    return rows, invalid, parser.header


def split_at(body: bytes, cuts) -> list[bytes]:
    points = sorted({0, len(body), *(c % (len(body) + 1) for c in cuts)})
    return [body[a:b] for a, b in zip(points, points[1:])]


def bytewise(body: bytes) -> list[bytes]:
    return [body[i:i + 1] for i in range(len(body))]


def random_chunks(body: bytes, seed: int) -> list[bytes]:
    rng = random.Random(seed)
    return split_at(body, [rng.randrange(len(body) + 1) for _ in range(rng.randrange(1, 12))])


def every_chunking(body: bytes):
    """The same body whole, one byte at a time and in a few random chunkings."""
    yield [body]
    yield bytewise(body)
    for seed in range(5):
        yield random_chunks(body, seed)


def assert_same_everywhere(body: bytes, expected, **options):
    for chunks in every_chunking(body):
        assert parse(body, chunks, **options) == expected, chunks


# -- csv-spectrum corpus ----------------------------------------------------------------------------

def test_csv_spectrum_corpus_is_in_the_repository():
    """Every case with its expected parse; a missing corpus fails here instead of skipping quietly."""
    assert len(SPECTRUM_FILES) == 11
    assert all((SPECTRUM / "json" / f"{path.stem}.json").is_file() for path in SPECTRUM_FILES)
    assert (SPECTRUM / "LICENSE").is_file()


@pytest.mark.parametrize("path", SPECTRUM_FILES, ids=lambda p: p.stem)
@pytest.mark.parametrize("chunking", ["whole", "bytewise", "random"])
def test_csv_spectrum(path, chunking):
    body = path.read_bytes()
    expected = json.loads((SPECTRUM / "json" / f"{path.stem}.json").read_text(encoding="utf-8"))
    chunks = {"whole": [body], "bytewise": bytewise(body),
              "random": random_chunks(body, seed=len(body))}[chunking]
    rows, invalid, header = parse(body, chunks)
    assert invalid == []
    assert [dict(zip(header, fields)) for _, fields in rows] == expected


# -- property tests ---------------------------------------------------------------------------------

TOKENS = ["a", "Z", "0", " ", ",", '"', "\n", "\r\n", "é", "ß", "☃", "𝄞", "x" * 30]
FIELD = st.lists(st.sampled_from(TOKENS), max_size=5).map("".join)
NAME = FIELD.filter(lambda name: name.strip() != "")


def reference(text: str):
    """One-shot csv.reader over the whole text, with the parser's rules applied to its records."""
    reader = csv.reader(io.StringIO(text, newline="\n"))
    header, rows, invalid = None, [], []
    while True:
        line = reader.line_num + 1
        try:
            fields = next(reader)
        except StopIteration:
            break
        if not fields:
            continue
        if header is None:
            header = fields
        elif len(fields) != len(header):
            invalid.append((line, f"expected {len(header)} fields, got {len(fields)}"))
        else:
            rows.append((line, fields))
    return rows, invalid, header


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), header=st.lists(NAME, min_size=1, max_size=5, unique_by=str.casefold),
       terminator=st.sampled_from(["\n", "\r\n"]), final_newline=st.booleans(), bom=st.booleans())
def test_matches_one_shot_csv_reader(data, header, terminator, final_newline, bom):
    width_changes = st.sampled_from([0, 0, 0, 0, 1, -1])
    table = [header]
    for _ in range(data.draw(st.integers(0, 8), label="rows")):
        width = max(0, len(header) + data.draw(width_changes))
        table.append(data.draw(st.lists(FIELD, min_size=width, max_size=width)))
    out = io.StringIO(newline="")
    csv.writer(out, lineterminator=terminator).writerows(table)
    text = out.getvalue()
    if not final_newline:
        text = text[:-len(terminator)]
    body = ("\ufeff" if bom else "").encode() + text.encode()
    cuts = data.draw(st.lists(st.integers(0, len(body)), max_size=10), label="cuts")

    expected = reference(text)
    assert expected[2] == header
    assert parse(body, split_at(body, cuts)) == expected


SOUP = [b"a", b"b", b",", b'"', b'""', b"\n", b"\r\n", b"\r", b"\xc3\xa9", b"\xf0\x9f\x98\x80", b"\xff",
        b"\xe2\x82", b"\xef\xbb\xbf", b"y" * 12]


def outcome(body: bytes, chunks: list[bytes], **options):
    try:
        return parse(body, chunks, **options)
    except CsvHeaderError as exc:
        return "CsvHeaderError", str(exc)


@settings(max_examples=400, deadline=None)
@given(data=st.data(), pieces=st.lists(st.sampled_from(SOUP), max_size=60),
       max_field_bytes=st.integers(1, 30), max_record_bytes=st.integers(1, 80))
def test_result_does_not_depend_on_chunking(data, pieces, max_field_bytes, max_record_bytes):
    """Arbitrary bytes (bad UTF-8, stray quotes and CRs, tiny limits): chunking never changes the result."""
    body = b"a,b\n" + b"".join(pieces) if data.draw(st.booleans()) else b"".join(pieces)
    options = {"max_field_bytes": max_field_bytes, "max_record_bytes": max_record_bytes}
    whole = outcome(body, [body], **options)
    assert outcome(body, bytewise(body), **options) == whole
    cuts = data.draw(st.lists(st.integers(0, len(body)), max_size=8))
    assert outcome(body, split_at(body, cuts), **options) == whole


# -- line numbers, blank lines, line endings, BOM ---------------------------------------------------

def test_rows_line_numbers_and_multiline_fields():
    body = b'id,text\n1,plain\n2,"two\nlines"\n3,"with ""quotes"", commas\r\nand CRLF"\n4,last\n'
    expected = ([(2, ["1", "plain"]), (3, ["2", "two\nlines"]),
                 (5, ["3", 'with "quotes", commas\r\nand CRLF']), (7, ["4", "last"])], [], ["id", "text"])
    assert_same_everywhere(body, expected)


def test_blank_lines_are_skipped_but_counted():
    body = b"\n\r\na,b\n\n1,2\r\n\r\n\n3,4\n\n"
    assert_same_everywhere(body, ([(5, ["1", "2"]), (8, ["3", "4"])], [], ["a", "b"]))


@pytest.mark.parametrize("body", [b"a,b\n1,2", b"a,b\r\n1,2\r", b"a,b\r\n1,2\r\n", b'a,b\n1,"2"'])
def test_last_line_without_newline(body):
    assert_same_everywhere(body, ([(2, ["1", "2"])], [], ["a", "b"]))


def test_crlf_split_across_chunks():
    chunks = [b"a,b\r", b"\n1,2\r", b"\n", b'3,"x\r', b'\ny"\r', b"\n"]
    assert parse(b"", chunks) == ([(2, ["1", "2"]), (3, ["3", "x\r\ny"])], [], ["a", "b"])


def test_bom_is_dropped_whole_or_split():
    body = b"\xef\xbb\xbfEmail,Name\nx@y.z,\xc3\x89mile\n"
    expected = ([(2, ["x@y.z", "Émile"])], [], ["Email", "Name"])
    assert_same_everywhere(body, expected)
    for cut in (1, 2):
        assert parse(body, [body[:cut], body[cut:]]) == expected


def test_bom_only_at_the_start():
    assert parse(b"a\n\xef\xbb\xbfx\n")[0] == [(2, ["\ufeffx"])]


def test_multibyte_characters_split_across_chunks():
    body = "name,emoji\nZoë,😀\n".encode()
    assert_same_everywhere(body, ([(2, ["Zoë", "😀"])], [], ["name", "emoji"]))


# -- invalid rows -----------------------------------------------------------------------------------

def test_wrong_field_count():
    body = b"a,b,c\n1,2,3\n1,2\n4,5,6\n7,8,9,10\n11,12,13\n"
    expected = ([(2, ["1", "2", "3"]), (4, ["4", "5", "6"]), (6, ["11", "12", "13"])],
                [(3, "expected 3 fields, got 2"), (5, "expected 3 fields, got 4")], ["a", "b", "c"])
    assert_same_everywhere(body, expected)


def test_invalid_utf8_rows():
    body = b'a,b\n1,2\n\xff,3\n4,"x\n\xe2\x82"\n5,6\n7,\xc3\n'
    expected = ([(2, ["1", "2"]), (6, ["5", "6"])], [(3, "invalid UTF-8"), (4, "invalid UTF-8"), (7, "invalid UTF-8")],
                ["a", "b"])
    assert_same_everywhere(body, expected)


def test_field_size_limit_in_bytes():
    body = ("a,b\n1,2\n" + "x" * 11 + ",3\n" + "x" * 10 + ",4\n" + "é" * 6 + ",5\n" + "é" * 5 + ",6\n7,8\n").encode()
    expected = ([(2, ["1", "2"]), (4, ["x" * 10, "4"]), (6, ["é" * 5, "6"]), (7, ["7", "8"])],
                [(3, "field exceeds 10 bytes"), (5, "field exceeds 10 bytes")], ["a", "b"])
    assert_same_everywhere(body, expected, max_field_bytes=10)


def test_default_field_limit_and_csv_module_limit():
    big, too_big = "x" * 65536, "y" * 65537
    body = f'a,b\n1,{big}\n2,"{too_big}"\n3,4\n'.encode()
    rows, invalid, _ = parse(body, random_chunks(body, 1))
    assert rows == [(2, ["1", big]), (4, ["3", "4"])]
    assert invalid == [(3, "field exceeds 65536 bytes")]
    # Fields beyond csv's default 131072-character limit are fine when our limits allow them.
    huge = "z" * 300_000
    body = f"a\n{huge}\n".encode()
    assert parse(body, max_field_bytes=400_000, max_record_bytes=400_000)[:2] == ([(2, [huge])], [])


def test_unterminated_quote_at_end_of_body():
    body = b'a,b\n1,2\n3,"4\n5,6\n'
    assert_same_everywhere(body, ([(2, ["1", "2"])], [(3, "unterminated quoted field")], ["a", "b"]))


def test_record_limit_resynchronises_at_the_next_line():
    reason = "record exceeds 50 bytes (unterminated quote?)"
    # One long line: dropped, the next line is a fresh record.
    body = b'a,b\n1,2\n3,"' + b"x" * 100 + b"\n5,6\n7,8\n"
    expected = ([(2, ["1", "2"]), (4, ["5", "6"]), (5, ["7", "8"])], [(3, reason)], ["a", "b"])
    assert_same_everywhere(body, expected, max_record_bytes=50)
    # An open quote over short lines: cut on the line where the record crosses 50 bytes (line 8:
    # 5 + 5 * 10 bytes) and resume on line 9, where the stray quote is now just a character.
    body = b'a,b\n1,2\n3,"x\n' + b"yyyyyyyyy\n" * 5 + b'z",9\n5,6\n'
    expected = ([(2, ["1", "2"]), (9, ['z"', "9"]), (10, ["5", "6"])], [(3, reason)], ["a", "b"])
    assert_same_everywhere(body, expected, max_record_bytes=50)


def test_record_limit_default_and_bounded_memory():
    assert CsvStreamParser().max_record_bytes == 65536 * 4 + 65536

    def held(parser):
        return len(parser._tail) + (parser._open.nbytes if parser._open else 0)

    for line_length in (1024, 5_000_000):  # 5 MB after an open quote, in short lines or in one line
        invalid = []
        parser = CsvStreamParser(on_invalid=lambda line, reason, raw: invalid.append((line, reason)))
        assert parser.feed(b'a,b\n1,"unterminated\n') == []
        body = (b"z" * (line_length - 1) + b"\n") * (5_000_000 // line_length)
        for start in range(0, len(body), 1000):
            parser.feed(body[start:start + 1000])
            assert held(parser) <= parser.max_record_bytes
        assert invalid[0] == (2, f"record exceeds {parser.max_record_bytes} bytes (unterminated quote?)")
        assert all(reason == "expected 2 fields, got 1" for _, reason in invalid[1:])
        assert parser.feed(b"ok,row\n") == [(3 + 5_000_000 // line_length, ["ok", "row"])]
        assert parser.finish() == []


def test_bare_carriage_return_in_unquoted_field():
    body = b"a,b\n1,x\ry\n2,3\n"
    rows, invalid, _ = parse(body)
    assert rows == [(3, ["2", "3"])]
    assert invalid == [(2, "malformed CSV: carriage return inside an unquoted field")]
    assert_same_everywhere(body, (rows, invalid, ["a", "b"]))


def test_quote_rules_of_the_default_dialect():
    body = b'a,b\nx"y,"p""q"\n"s"t,u\n'
    assert parse(body)[0] == [(2, ['x"y', 'p"q']), (3, ["st", "u"])]


def test_without_on_invalid_bad_rows_are_dropped_silently():
    parser = CsvStreamParser()
    assert parser.feed(b"a,b\n1\n2,3\n\xff,4\n") == [(3, ["2", "3"])]
    assert parser.finish() == []


# -- header -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("body", [b"", b"\n\r\n\n", b"\xef\xbb\xbf"])
def test_empty_body(body):
    parser = CsvStreamParser()
    parser.feed(body)
    with pytest.raises(CsvHeaderError, match="empty body"):
        parser.finish()


@pytest.mark.parametrize("header, match", [
    (b"a,,b\n", "field 2 is empty"),
    (b"a, \n", "field 2 is empty"),
    (b"Email,Name,EMAIL\n", "duplicate field name 'EMAIL'"),
    (b"\na,\xffb\n", "line 2: the header row is not valid UTF-8"),
    (b"a,x\ry\n", "malformed CSV"),
])
def test_bad_header_raises_as_soon_as_complete(header, match):
    parser = CsvStreamParser()
    with pytest.raises(CsvHeaderError, match=match):
        for chunk in bytewise(header):
            parser.feed(chunk)


def test_header_problems_at_end_of_body():
    for body, match in [(b'a,"b\n', "unterminated quoted field"), (b"a,a", "duplicate"),
                        (b"\xef\xbb", "not valid UTF-8")]:
        parser = CsvStreamParser()
        parser.feed(body)
        with pytest.raises(CsvHeaderError, match=match):
            parser.finish()
    parser = CsvStreamParser(max_record_bytes=10)
    with pytest.raises(CsvHeaderError, match="exceeds 10 bytes"):
        parser.feed(b"abcdefghijkl")


def test_header_is_kept_as_written():
    rows, invalid, header = parse(b'"Email","First Name",Sex\r\nx@y.z,Ann,F\r\n')
    assert header == ["Email", "First Name", "Sex"]
    assert rows == [(2, ["x@y.z", "Ann", "F"])]


def test_raw_text_is_each_returned_rows_text_as_sent_however_the_body_is_cut():
    body = b'email,name\n\n"",Ann\r\nx,"multi\nline"\n"  ",Bob\nshort\na,b\n'
    expected = {3: '"",Ann\r\n', 4: 'x,"multi\nline"\n', 6: '"  ",Bob\n', 8: "a,b\n"}
    for size in (1, 2, 5, 7, len(body)):
        parser = CsvStreamParser()
        seen = {}
        for start in range(0, len(body), size):
            seen.update({line: parser.raw_text(line) for line, _ in parser.feed(body[start:start + size])})
        seen.update({line: parser.raw_text(line) for line, _ in parser.finish()})
        assert seen == expected, size
        assert parser.first_row_line == 3
