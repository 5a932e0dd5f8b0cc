"""Rejected rows gather in bounded pieces even when one body chunk holds hundreds of thousands of them."""

from gateway.ingest.upload import ColumnRules, Upload, plan_columns
from gateway.ingest.rejects import FLUSH_ROWS, RejectSink


class OneChunk:
    """A request body that arrives as one large chunk (as an inflated gzip step does)."""

    def __init__(self, body: bytes) -> None:
        self.body = body

    async def readany(self) -> bytes:
        body, self.body = self.body, b""
        return body


async def test_records_pause_within_a_large_chunk_so_pending_rejects_stay_bounded():
    rows = 500_000
    body = b"email,name\n" + b"x\n" * rows + b"ok@x.com,fine\n"
    sink = RejectSink(1, 1, max_per_segment=10**9, max_per_endpoint=10**9)
    upload = Upload(OneChunk(body), gzipped=False, max_body_bytes=len(body), max_field_bytes=65536,
                    on_reject=sink.add)
    plan = plan_columns(await upload.read_header(), None, [], ColumnRules(ids=None, max_attributes=1000))
    records, most_pending, pauses = [], 0, 0
    while not upload.done:
        records += [record async for record in upload.records(plan, pause=sink.full)]
        most_pending = max(most_pending, len(sink._pending))
        sink._pending.clear()  # what flush() does once they are stored
        pauses += 1
    assert records == [(rows + 2, "ok@x.com", "fine")]
    assert upload.invalid == rows
    assert pauses > rows // (FLUSH_ROWS + 32 * 1024)
    assert most_pending < FLUSH_ROWS + 32 * 1024  # at most one 64 KiB piece beyond the flush size
