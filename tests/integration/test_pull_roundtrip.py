"""What goes in comes out: pushed audiences read back by the sync GET and through an export job, byte for
byte (csv-spectrum), from a consistent snapshot (jobs), and gzip-encoded when the client asks."""

import csv
import gzip
import io
import json

import pytest

from tests.conftest import CSV_SPECTRUM as CORPUS
from tests.conftest import CSV_SPECTRUM_FILES as FILES
from tests.integration.pull_helpers import (HEADER, by_identity, create_job, download, export_via_job, parse_csv,
                                            people, segment_with, sync_get, sync_rows, wait_for_status)
from tests.integration.push_helpers import create_segment, csv_body, push_ok


@pytest.mark.parametrize("path", FILES, ids=[path.stem for path in FILES])
async def test_corpus_file_reads_back_exactly(client, path):
    body = path.read_bytes()
    header = next(csv.reader(io.StringIO(body.decode("utf-8"), newline="")))
    expected = json.loads((CORPUS / "json" / f"{path.stem}.json").read_text(encoding="utf-8"))
    expected_rows = by_identity([row[name] for name in header] for row in expected)
    segment_id = await create_segment(client, path.stem)
    await push_ok(client, segment_id, body)

    assert await sync_rows(client, segment_id) == (header, expected_rows)
    _, job_header, job_rows = await export_via_job(client, segment_id)
    assert (job_header, job_rows) == (header, expected_rows)


async def test_a_job_keeps_the_snapshot_it_took(client):
    old = people(5, "old")
    segment_id = await segment_with(client, old)
    job, _, rows = await export_via_job(client, segment_id)
    assert rows == by_identity(old)

    new = people(3, "new")
    await push_ok(client, segment_id, csv_body(HEADER, new), "REPLACE")
    await push_ok(client, segment_id, csv_body(HEADER, [["late@x.com", "Late"], [old[0][0], "Changed"]]))
    assert await sync_rows(client, segment_id) == (HEADER, by_identity([*new, ["late@x.com", "Late"],
                                                                         [old[0][0], "Changed"]]))

    header, rows = (await download(client, job)).table()
    assert (header, by_identity(rows)) == (HEADER, by_identity(old))


async def test_gzip_when_asked_on_sync_get_and_job_download(client):
    segment_id = await segment_with(client, people(2000))
    job = await create_job(client, segment_id)
    await wait_for_status(client, job, "complete")

    for read in (lambda **options: sync_get(client, segment_id, **options),
                 lambda **options: download(client, job, **options)):
        plain = await read(headers={"Accept-Encoding": "identity"})
        assert "Content-Encoding" not in plain.headers
        packed = await read(headers={"Accept-Encoding": "gzip"}, auto_decompress=False)
        assert packed.status == 200
        assert packed.headers["Content-Encoding"] == "gzip"
        assert packed.headers["Content-Type"] == "text/csv; charset=utf-8"
        header, rows = plain.table()
        assert (header, len(rows)) == (HEADER, 2000)
        unpacked_header, unpacked_rows = parse_csv(gzip.decompress(packed.body))  # row order is not promised
        assert (unpacked_header, by_identity(unpacked_rows)) == (header, by_identity(rows))
