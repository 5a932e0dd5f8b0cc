"""An ADD body small enough to be read into memory (``GATEWAY_ADD_READ_AHEAD_BYTES``) is applied by
``gateway.ingest.apply.add_direct``: under the segment's lock, its rows go by COPY straight into the members
table while every identity is new, else the batch is merged as any ADD. Either way the result is the same;
these tests pin the parts that differ (the fallback, the short lock wait, a client gone while read ahead).
"""

from __future__ import annotations

import asyncio

import asyncpg

from gateway import state
from tests.conftest import ADMIN_KEY
from tests.helpers import eventually, lock_waiters, members_table
from tests.integration.push_helpers import audience, create_segment, push_ok, seeded_segment, snapshot
from tests.integration.test_metrics import delta, scrape

MERGED = "audience_gateway_add_direct_merged_total"


async def test_new_identities_go_straight_in_and_a_known_one_falls_back_to_the_merge(client, db):
    segment_id = await create_segment(client)
    before = await scrape(client)
    fresh = await push_ok(client, segment_id, "email,name\n" + "".join(f"u{i}@x.com,U{i}\n" for i in range(50)))
    assert fresh["numAdded"] == "50"
    assert delta(before, await scrape(client), MERGED) == 0
    # u49 is known and sorts last; u7 comes twice (the last row wins); z0 is new
    before = await scrape(client)
    mixed = await push_ok(client, segment_id, "email,name\nz0@x.com,Z\nu7@x.com,Seven\nU7@x.com,Seven again\n"
                                              "u49@x.com,Changed\n")
    assert (mixed["numReceived"], mixed["numInvalid"], mixed["numAdded"]) == ("4", "0", "1")
    assert delta(before, await scrape(client), MERGED) == 1
    members = await audience(db, segment_id)
    assert len(members) == 51
    assert (members["u7@x.com"]["name"], members["u49@x.com"]["name"], members["z0@x.com"]["name"]) == (
        "Seven again", "Changed", "Z")
    assert await db.fetchval("SELECT member_count FROM segments WHERE id = $1", int(segment_id)) == 51


async def test_the_short_lock_wait_ends_with_the_copy(client, db, database_url):
    """The COPY gives up on a row wait after 20 ms; what follows it (the segment's counts, written at the end of
    every batch one at a time) waits as long as it takes: here for another transaction holding the segment's
    row for well over that."""
    segment_id, _ = await seeded_segment(client, db)
    holder = await asyncpg.connect(database_url)
    try:
        async with holder.transaction():
            await holder.execute("SELECT 1 FROM segments WHERE id = $1 FOR NO KEY UPDATE", int(segment_id))
            pushing = asyncio.create_task(push_ok(client, segment_id, "email,name\nc@x.com,Cy\nd@x.com,Di\n"))

            async def waited_long() -> bool:
                return bool(await db.fetchval(
                    "SELECT count(*) FROM pg_stat_activity WHERE pid = any($1::int[]) "
                    "AND clock_timestamp() - state_change > interval '200 milliseconds'", await lock_waiters(db)))

            await eventually(waited_long, "the push to wait 200 ms for the segment's row")
        assert (await pushing)["numAdded"] == "2"
    finally:
        await holder.close()
    assert set(await audience(db, segment_id)) == {"a@x.com", "b@x.com", "c@x.com", "d@x.com"}


async def test_a_client_hanging_up_while_its_body_is_read_ahead_applies_nothing(client, db):
    segment_id, before = await seeded_segment(client, db)
    pool = client.app[state.POOL]
    head = (f"POST /v1/segments/{segment_id}/data HTTP/1.1\r\nHost: {client.server.host}:{client.server.port}\r\n"
            f"Authorization: Bearer {ADMIN_KEY}\r\nContent-Type: text/csv\r\nContent-Length: 1048576\r\n\r\n").encode()
    _, writer = await asyncio.open_connection(client.server.host, client.server.port)
    try:
        writer.write(head + b"email,name\nnew@x.com,New\na@x.com,Changed\n")
        await writer.drain()

        async def reading_ahead() -> bool:  # planned on a pooled connection, now waiting for the rest
            return pool.get_size() - pool.get_idle_size() > 0

        await eventually(reading_ahead, "the push to hold a connection while it reads its body")
        # nothing is locked or open meanwhile: the transaction starts once the body is in
        assert await db.fetchval("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                                 "AND (backend_xid IS NOT NULL OR state LIKE 'idle in transaction%')") == 0
    finally:
        writer.close()
        await writer.wait_closed()

    async def released() -> bool:
        return pool.get_size() - pool.get_idle_size() == 0

    await eventually(released, "the push's connection to be released")
    assert await snapshot(db, segment_id) == before
    assert (await push_ok(client, segment_id, "email\nafter@x.com\n"))["numAdded"] == "1"


async def test_a_copy_stopped_at_its_first_row_merges_every_row_of_a_long_body(client, db):
    """The known identity is the body's first row: the COPY stops while most of the body (about 2 MB, parsed
    16 KiB at a time) is still to be parsed; the merge gets every row all the same."""
    segment_id = await create_segment(client)
    await push_ok(client, segment_id, "email,name\nfirst@x.com,Old\n")
    rows = "".join(f"member{i:06d}@example.com,Name {i}\n" for i in range(60_000))
    result = await push_ok(client, segment_id, "email,name\nfirst@x.com,New\n" + rows)
    assert (result["numReceived"], result["numAdded"]) == ("60001", "60000")
    assert await db.fetchval(f"SELECT count(*) FROM {members_table(segment_id)}") == 60_001
    assert await db.fetchval(f"SELECT attrs FROM {members_table(segment_id)} WHERE identity = 'first@x.com'") == [
        "first@x.com", "New"]
    assert await db.fetchval("SELECT member_count FROM segments WHERE id = $1", int(segment_id)) == 60_001


async def test_a_body_with_many_rejects_goes_in_parts_and_a_later_part_falls_back(client, db):
    """More than ``FLUSH_ROWS`` rejected rows: the COPY pauses to store them and goes on in a savepoint of its
    own. The second part repeats an identity of the first, so it alone is merged (the answer is the same as if
    the whole body were: this pins that nothing is lost or counted twice across the parts): the later row
    wins, the counts are those of the whole body and every rejected row is stored."""
    segment_id = await create_segment(client)
    valid = [f"p{i:05d}@x.com,first" for i in range(12_000)]
    lines = [row for pair in zip(valid, ["broken"] * len(valid)) for row in pair]  # 12,000 valid, 12,000 invalid
    lines.append("P00001@x.com,second")  # in the second part: its first appearance is in the first
    result = await push_ok(client, segment_id, "email,name\n" + "\n".join(lines) + "\n")
    assert (result["numReceived"], result["numInvalid"], result["numAdded"]) == ("24001", "12000", "12000")
    assert await db.fetchval(f"SELECT attrs FROM {members_table(segment_id)} WHERE identity = 'p00001@x.com'") == [
        "p00001@x.com", "second"]
    assert await db.fetchval(f"SELECT count(*) FROM {members_table(segment_id)}") == 12_000
    assert await db.fetchval("SELECT member_count FROM segments WHERE id = $1", int(segment_id)) == 12_000
    assert await db.fetchval("SELECT count(*) FROM upload_rejects") == 12_000
