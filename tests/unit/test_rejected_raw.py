"""The raw text the parser reports with each rejected row: the row as sent (capped), whatever the chunking."""

import pytest

from gateway.ingest.csvparse import CsvStreamParser
from gateway.ingest.rejects import RAW_LIMIT, TRUNCATED, clean_raw
from tests.unit.test_csvparse import bytewise, random_chunks

BODY = (b'email,name\r\n'
        b'a@x.com,ok\r\n'
        b'short\r\n'                                   # line 3: wrong field count
        b'q@x.com,"multi\r\nline",extra\r\n'           # line 4: quoted newline, 3 fields
        b'bad@x.com,caf\xe9\r\n'                       # line 6: invalid UTF-8
        b'big@x.com,' + b'z' * 3000 + b'\r\n'          # line 7: field over 2000 bytes, raw over the cap
        b'b@x.com,ok\r\n'
        b'open@x.com,"never closed\r\nmore')           # line 9: unterminated at the end
EXPECTED = [
    (3, "expected 2 fields, got 1", "short"),
    (4, "expected 2 fields, got 3", 'q@x.com,"multi\r\nline",extra'),
    (6, "invalid UTF-8", "bad@x.com,caf\ufffd"),
    (7, "field exceeds 2000 bytes", ("big@x.com," + "z" * 3000)[:RAW_LIMIT] + TRUNCATED),
    (9, "unterminated quoted field", 'open@x.com,"never closed\r\nmore'),
]


def rejected(chunks: list[bytes]) -> list[tuple[int, str, str]]:
    found = []
    parser = CsvStreamParser(max_field_bytes=2000,
                             on_invalid=lambda line, reason, raw: found.append((line, reason, clean_raw(raw))))
    for chunk in chunks:
        parser.feed(chunk)
    parser.finish()
    return found


@pytest.mark.parametrize("chunking", ["whole", "bytewise", *range(8)])
def test_raw_is_the_row_as_sent_whatever_the_chunking(chunking):
    chunks = [BODY] if chunking == "whole" else bytewise(BODY) if chunking == "bytewise" else \
        random_chunks(BODY, chunking)
    assert rejected(chunks) == EXPECTED


def test_an_oversized_record_reports_the_start_of_its_text():
    found = []
    parser = CsvStreamParser(max_field_bytes=100, max_record_bytes=300,
                             on_invalid=lambda line, reason, raw: found.append((line, clean_raw(raw))))
    body = b'h1,h2\nx,"' + b"y" * 5000 + b'\nnext,row\n'
    for chunk in random_chunks(body, 3):
        parser.feed(chunk)
    parser.finish()
    assert found[0][0] == 2
    assert found[0][1].startswith('x,"yyy') and found[0][1].endswith(TRUNCATED)


def test_clean_raw_keeps_short_rows_and_replaces_what_text_cannot_hold():
    assert clean_raw("a,b\n") == "a,b"
    assert clean_raw("a\x00b") == "a\ufffdb"
    assert clean_raw("x" * RAW_LIMIT) == "x" * RAW_LIMIT
    assert clean_raw("x" * (RAW_LIMIT + 1)) == "x" * RAW_LIMIT + TRUNCATED
