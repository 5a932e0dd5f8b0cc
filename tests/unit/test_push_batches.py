"""Splitting a file into batches (gateway.client.batches): whatever the records (quoted newlines, CRLF,
blank lines, invalid rows, a missing final newline) and however the file is read in chunks, the batches
are the header + the file's own bytes, hold ``batch_rows`` records each as the server's parser counts
them, and there are exactly as many as the scan announced."""

import gzip
import math
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.client import batches
from gateway.client.batches import FileProblem, cut, scan
from gateway.ingest.csvparse import CsvStreamParser

FIELD = st.text(alphabet='ab,"\n\r é', max_size=6)
ROW = st.lists(FIELD, min_size=1, max_size=3)


def quoted(field: str) -> str:
    return '"' + field.replace('"', '""') + '"' if any(c in field for c in ',"\n\r') else field


def render(rows: list[list[str]], newline: str, blank_every: int, final_newline: bool) -> bytes:
    lines = ["h1,h2"]
    for number, row in enumerate(rows, 1):
        lines.append(",".join(map(quoted, row)))
        if blank_every and number % blank_every == 0:
            lines.append("")
    text = newline.join(lines) + (newline if final_newline else "")
    return text.encode()


def records_in(body: bytes) -> int:
    """Rows the server would count in this body: valid and invalid."""
    invalid = []
    parser = CsvStreamParser(on_invalid=lambda line, reason, raw: invalid.append(line))
    rows = parser.feed(body) + parser.finish()
    return len(rows) + len(invalid)


@settings(max_examples=150, deadline=None)
@given(rows=st.lists(ROW, max_size=25), newline=st.sampled_from(["\n", "\r\n"]), blank_every=st.integers(0, 4),
       final_newline=st.booleans(), batch_rows=st.integers(1, 7), chunk=st.sampled_from([1, 3, 64, 1 << 20]),
       packed=st.booleans())
def test_batches_are_the_files_bytes_in_counted_records(tmp_path_factory, rows, newline, blank_every,
                                                        final_newline, batch_rows, chunk, packed):
    content = render(rows, newline, blank_every, final_newline)
    path = tmp_path_factory.mktemp("batches") / "f.csv"
    path.write_bytes(gzip.compress(content) if packed else content)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(batches, "CHUNK_BYTES", chunk)
        plan = scan(path, batch_rows)
        bodies = list(cut(path, plan))

    assert plan.records == records_in(content)
    assert plan.total == len(bodies) == max(1, math.ceil(plan.records / batch_rows))
    assert [records_in(body) for body in bodies] == [plan.rows_in(k) for k in range(1, plan.total + 1)]
    # The header part: the lines before the first record (the header row and any blank lines after it).
    header = b"".join(line + b"\n" for line in content.split(b"\n")[:plan.starts[0] - 1]) if plan.records else content
    assert all(body.startswith(header) for body in bodies)
    assert header + b"".join(body[len(header):] for body in bodies) == content


def test_a_file_without_records_is_one_header_only_batch(tmp_path):
    path = tmp_path / "f.csv"
    path.write_bytes(b"Email,Name\n\n")
    plan = scan(path, 10)
    assert (plan.records, plan.total, list(cut(path, plan))) == (0, 1, [b"Email,Name\n\n"])


def test_invalid_lines_are_found_before_sending_and_mapped_back(tmp_path):
    path = tmp_path / "f.csv"
    path.write_bytes(b'a,b\n1,"x\ny"\n2\n3,z\n4,"open\n')
    plan = scan(path, 2)
    assert plan.invalid == 2
    assert plan.invalid_samples == [(4, "expected 2 fields, got 1"), (6, "unterminated quoted field")]
    assert plan.starts == [2, 5]
    assert plan.file_line(2, 2) == 5 and plan.file_line(2, 3) == 6  # body line 2 of batch 2 is file line 5


@pytest.mark.parametrize("content, message", [(b"", "empty body"), (b'a,A\n1,2\n', "duplicate"),
                                              (b"\x1f\x8bnot gzip", "cannot read")])
def test_files_that_cannot_be_pushed(tmp_path, content, message):
    path = tmp_path / "f.csv"
    path.write_bytes(content)
    with pytest.raises(FileProblem, match=message):
        scan(path, 10)


# -- counting from the bytes (check_rows=False) gives what the parser gives --------------------------

ANY_FIELD = st.text(alphabet='ab,"\n\r é\x00', max_size=8)
RAW_LINE = st.text(alphabet='ab,"\r é', max_size=8)  # lines as typed: a stray quote opens a field


def any_csv(data: st.DataObject) -> bytes:
    """Well-formed rows, raw lines (stray quotes, bare CRs, wrong widths), blank lines of CRs, invalid
    UTF-8, a BOM, CRLF or LF, with or without a final newline."""
    newline = data.draw(st.sampled_from(["\n", "\r\n"]))
    lines = [data.draw(st.sampled_from(["h1,h2", '"h\n1",h2', "h1"]))]
    for _ in range(data.draw(st.integers(0, 30))):
        kind = data.draw(st.sampled_from(["row", "row", "row", "raw", "blank", "bad"]))
        if kind == "row":
            lines.append(",".join(map(quoted, data.draw(st.lists(ANY_FIELD, min_size=1, max_size=3)))))
        elif kind == "raw":
            lines.append(data.draw(RAW_LINE))
        elif kind == "blank":
            lines.append(data.draw(st.sampled_from(["", "\r", "\r\r"])))
        else:
            lines.append("x,\udcff")
    body = newline.join(lines).encode("utf-8", "surrogateescape")
    if data.draw(st.booleans()):
        body += newline.encode()
    return (b"\xef\xbb\xbf" if data.draw(st.booleans()) else b"") + body


@settings(max_examples=400, deadline=None)
@given(data=st.data(), batch_rows=st.integers(1, 5), chunk=st.sampled_from([1, 2, 7, 64, 1 << 20]))
def test_counting_from_bytes_gives_the_parsers_batches(tmp_path_factory, data, batch_rows, chunk):
    content = any_csv(data)
    path = tmp_path_factory.mktemp("fast") / "f.csv"
    path.write_bytes(content)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(batches, "CHUNK_BYTES", chunk)
        try:
            checked = scan(path, batch_rows)
        except FileProblem as exc:
            with pytest.raises(FileProblem, match=re.escape(str(exc))):
                scan(path, batch_rows, check_rows=False)
            return
        fast = scan(path, batch_rows, check_rows=False)
        assert list(cut(path, fast)) == list(cut(path, checked))
    assert (fast.header, fast.starts, fast.records, fast.bytes) == \
        (checked.header, checked.starts, checked.records, checked.bytes)
    assert checked.checked and not fast.checked


def test_an_unterminated_quote_is_parsed_until_the_parser_drops_it(tmp_path):
    """After an unterminated quote the next lines are inside the quoted field, whatever their bytes, until
    the record exceeds the parser's limit (2 fields: 131080 bytes); counting resumes after that."""
    lines = [b"a,b\n", b'1,"open\n'] + [b"%d,x\n" % i for i in range(20_000)]
    path = tmp_path / "f.csv"
    path.write_bytes(b"".join(lines))
    checked, fast = scan(path, 1000), scan(path, 1000, check_rows=False)
    assert 0 < checked.records < 20_000
    assert (fast.starts, fast.records) == (checked.starts, checked.records)


def test_counting_from_bytes_takes_the_quote_free_lines_without_the_parser(tmp_path, monkeypatch):
    path = tmp_path / "f.csv"
    path.write_bytes(b"a,b\n" + b"1,x\n" * 5000 + b'2,"y\nz"\n' + b"3,x\n" * 5000)
    fed: list[int] = []
    feed = batches.CsvStreamParser.feed
    monkeypatch.setattr(batches.CsvStreamParser, "feed", lambda self, data: fed.append(len(data)) or feed(self, data))
    plan = scan(path, 4000, check_rows=False)
    assert (plan.records, plan.starts) == (10_001, [2, 4002, 8003])  # the quoted record spans lines 5002-5003
    assert sum(fed) < 100  # the header and the quoted record


def test_the_header_is_read_alone(tmp_path, monkeypatch):
    """``read_header`` stops at the header: what follows (here a gzip stream cut short) is not read."""
    monkeypatch.setattr(batches, "CHUNK_BYTES", 64)
    path = tmp_path / "f.csv.gz"
    path.write_bytes(gzip.compress(b'\xef\xbb\xbf\n"Na\nme",Email\n' + b"a,b\n" * 1000)[:-12])
    assert batches.read_header(path) == ["Na\nme", "Email"]
    with pytest.raises(FileProblem, match="cannot read"):
        scan(path, 10)
    for content, message in ((b"", "empty body"), (b"a,A\n1,2\n", "duplicate")):
        path.write_bytes(content)
        with pytest.raises(FileProblem, match=message):
            batches.read_header(path)
