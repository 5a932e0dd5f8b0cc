"""The row counts an export file job reports as its progress: CSV rows (a newline inside a quoted field is
not a row's end) and ndjson lines, whatever the chunks' boundaries."""

import csv
import io
import random

from gateway.jobs.export_files import CsvRows, LineRows

FIELDS = ["plain", "", 'say "hi"', "one, two", "line\nbreak", "\n", '"', '""\n"', "end\r\n", "Zoë"]


def chunks(data: bytes, rng: random.Random) -> list[bytes]:
    cuts = sorted(rng.sample(range(1, len(data)), min(len(data) - 1, rng.randrange(1, 40))))
    return [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)])]


def test_csv_rows_are_counted_across_any_chunking():
    rng = random.Random(17)
    for _ in range(300):
        out = io.StringIO()
        rows = [[rng.choice(FIELDS) for _ in range(rng.randrange(1, 4))] for _ in range(rng.randrange(1, 30))]
        csv.writer(out, lineterminator="\n").writerows(rows)
        counter = CsvRows()
        for chunk in chunks(out.getvalue().encode(), rng):
            counter.feed(chunk)
        assert counter.rows == len(rows), rows


def test_ndjson_rows_are_lines():
    counter = LineRows()
    for chunk in (b'{"a": "x\\ny"}\n{"a"', b': null}\n', b""):
        counter.feed(chunk)
    assert counter.rows == 2
