"""REPLACE shares: staged batch by batch, committed in one transaction when every batch is in."""

import asyncio
import gzip
import random

from gateway import state
from gateway.ingest import upload as upload_module
from gateway.ingest.replace import expire_idle_sessions
from tests.integration.push_helpers import (app_client, audience, create_segment, csv_body, identities, push, push_ok,
                                            sessions, snapshot, staging_tables)
from tests.helpers import eventually, lock_waiters

OLD = "email,name\nold1@x.com,Old\nold2@x.com,Old\n"


def rows_body(*names: str, value: str = "v") -> str:
    """``email,name`` rows for identities ``<name>@x.com``."""
    return "email,name\n" + "".join(f"{name}@x.com,{value}\n" for name in names)


async def replace_batch(client, segment_id: str, body: str, total: int, number: int, **params) -> dict:
    return await push_ok(client, segment_id, body, "REPLACE", total=total, number=number, **params)


async def old_segment(client, db) -> tuple[str, dict]:
    segment_id = await create_segment(client)
    await push_ok(client, segment_id, OLD)
    return segment_id, await snapshot(db, segment_id)


async def test_replace_becomes_visible_only_when_the_last_batch_arrives(client, db):
    segment_id, before = await old_segment(client, db)
    batches = {1: rows_body("c", "d"), 2: rows_body("e"), 3: rows_body("f", "c", "f", value="last"), 4: "email\n"}
    order = [3, 1, 4, 2]
    for position, number in enumerate(order):
        result = await replace_batch(client, segment_id, batches[number], 4, number)
        assert result["numAdded"] == {1: "2", 2: "1", 3: "2", 4: "0"}[number]
        if position < len(order) - 1:
            assert result["replaceCommitted"] is False
            assert "audienceSize" not in result
            current = await snapshot(db, segment_id)
            assert (current["members"], current["segment"]) == (before["members"], before["segment"])
    assert result["replaceCommitted"] is True
    assert result["audienceSize"] == 4
    assert await audience(db, segment_id) == {
        "c@x.com": {"email": "c@x.com", "name": "last"}, "d@x.com": {"email": "d@x.com", "name": "v"},
        "e@x.com": {"email": "e@x.com", "name": "v"}, "f@x.com": {"email": "f@x.com", "name": "last"}}
    assert await db.fetchval("SELECT member_count FROM segments WHERE id = $1", int(segment_id)) == 4
    assert [session["status"] for session in await sessions(db, segment_id)] == ["committed"]
    assert await staging_tables(db) == []


async def test_resending_a_batch_replaces_what_it_staged(client, db):
    segment_id, _ = await old_segment(client, db)
    await replace_batch(client, segment_id, rows_body("a", "b"), 2, 1)
    again = await replace_batch(client, segment_id, rows_body("c"), 2, 1)
    assert (again["numAdded"], again["replaceCommitted"]) == ("1", False)
    done = await replace_batch(client, segment_id, rows_body("d"), 2, 2)
    assert (done["replaceCommitted"], done["audienceSize"]) == (True, 2)
    assert await identities(db, segment_id) == {"c@x.com", "d@x.com"}


async def test_the_later_batch_wins_whatever_the_arrival_order(client, db):
    for order in ([1, 2], [2, 1]):
        segment_id = await create_segment(client)
        for number in order:
            await replace_batch(client, segment_id, rows_body("x", value=f"from{number}"), 2, number)
        assert await audience(db, segment_id) == {"x@x.com": {"email": "x@x.com", "name": "from2"}}, order


async def test_no_batch_parameters_is_a_one_batch_replace(client, db):
    segment_id, _ = await old_segment(client, db)
    reply = await push(client, segment_id, rows_body("n1", "n2", "n1"), "REPLACE")
    assert reply.counts == {"segmentId": segment_id, "numReceived": "3", "numInvalid": "0", "numAdded": "2"}
    assert (reply.result["replaceCommitted"], reply.result["audienceSize"]) == (True, 2)
    assert await identities(db, segment_id) == {"n1@x.com", "n2@x.com"}


async def test_a_recurring_share_whose_first_batch_is_unchanged_replaces_again(client, db):
    """The next run of a share (same key) whose batch 1 has the same body as last time: a new session, which
    commits when its batches are in, not an answer recorded for the previous run."""
    segment_id, _ = await old_segment(client, db)
    await replace_batch(client, segment_id, rows_body("same", "gone"), 2, 1, sourceSegmentID="S")
    first = await replace_batch(client, segment_id, rows_body("run1"), 2, 2, sourceSegmentID="S")
    assert (first["replaceCommitted"], first["audienceSize"]) == (True, 3)

    again = await replace_batch(client, segment_id, rows_body("same", "gone"), 2, 1, sourceSegmentID="S")
    assert (again["replaceCommitted"], again["numAdded"]) == (False, "2")
    assert [session["status"] for session in await sessions(db, segment_id)] == ["committed", "open"]
    done = await replace_batch(client, segment_id, rows_body("run2"), 2, 2, sourceSegmentID="S")
    assert (done["replaceCommitted"], done["audienceSize"]) == (True, 3)
    assert await identities(db, segment_id) == {"same@x.com", "gone@x.com", "run2@x.com"}
    assert [session["status"] for session in await sessions(db, segment_id)] == ["committed", "committed"]
    assert await staging_tables(db) == []


async def test_a_one_batch_replace_sent_again_after_an_add_replaces_again(client, db):
    segment_id, _ = await old_segment(client, db)
    first = await push_ok(client, segment_id, rows_body("r1", "r2"), "REPLACE")
    assert (first["replaceCommitted"], first["audienceSize"]) == (True, 2)
    await push_ok(client, segment_id, rows_body("added"))
    assert await identities(db, segment_id) == {"r1@x.com", "r2@x.com", "added@x.com"}
    again = await push_ok(client, segment_id, rows_body("r1", "r2"), "REPLACE")
    assert (again["replaceCommitted"], again["audienceSize"], again["numAdded"]) == (True, 2, "2")
    assert await identities(db, segment_id) == {"r1@x.com", "r2@x.com"}


async def test_a_batch_sent_again_after_its_share_committed_opens_a_session_and_changes_nothing_yet(client, db):
    """Its answer was lost, say: the re-sent batch stages into a new session, which expires if nothing
    follows; the live audience is the committed one meanwhile."""
    segment_id, _ = await old_segment(client, db)
    await replace_batch(client, segment_id, rows_body("r1"), 2, 1)
    last = await replace_batch(client, segment_id, rows_body("r2"), 2, 2)
    assert last["replaceCommitted"] is True
    committed = (await snapshot(db, segment_id))["members"]
    again = await replace_batch(client, segment_id, rows_body("r2"), 2, 2)
    assert (again["replaceCommitted"], again["numAdded"]) == (False, "1")
    assert "audienceSize" not in again
    assert [session["status"] for session in await sessions(db, segment_id)] == ["committed", "open"]
    assert (await snapshot(db, segment_id))["members"] == committed
    assert len(await staging_tables(db)) == 1


async def test_add_and_remove_during_a_session_apply_at_once_then_the_replace_wins(client, db):
    segment_id, _ = await old_segment(client, db)
    await replace_batch(client, segment_id, rows_body("r1", "both"), 2, 1)
    await push_ok(client, segment_id, rows_body("added", "both", value="added"))
    await push_ok(client, segment_id, "email\nold1@x.com\n", "REMOVE")
    assert await identities(db, segment_id) == {"old2@x.com", "added@x.com", "both@x.com"}
    done = await replace_batch(client, segment_id, rows_body("r2"), 2, 2)
    assert (done["replaceCommitted"], done["audienceSize"]) == (True, 3)
    assert await audience(db, segment_id) == {
        name: {"email": name, "name": "v"} for name in ("r1@x.com", "both@x.com", "r2@x.com")}


async def test_two_sessions_with_different_keys_each_commit_and_the_later_commit_wins(client, db):
    segment_id, _ = await old_segment(client, db)
    await replace_batch(client, segment_id, rows_body("a1"), 2, 1, sourceSegmentID="A")
    await replace_batch(client, segment_id, rows_body("b1"), 2, 1, sourceSegmentID="B")
    assert len(await staging_tables(db)) == 2
    done_a = await replace_batch(client, segment_id, rows_body("a2"), 2, 2, sourceSegmentID="A")
    assert (done_a["replaceCommitted"], done_a["audienceSize"]) == (True, 2)
    assert await identities(db, segment_id) == {"a1@x.com", "a2@x.com"}
    done_b = await replace_batch(client, segment_id, rows_body("b2", "b3"), 2, 2, sourceSegmentID="B")
    assert (done_b["replaceCommitted"], done_b["audienceSize"]) == (True, 3)
    assert await identities(db, segment_id) == {"b1@x.com", "b2@x.com", "b3@x.com"}
    assert [(s["source_segment_id"], s["status"]) for s in await sessions(db, segment_id)] == [
        ("A", "committed"), ("B", "committed")]
    assert await staging_tables(db) == []


async def test_an_idle_session_expires_without_touching_the_live_audience(client, db):
    segment_id, before = await old_segment(client, db)
    await replace_batch(client, segment_id, rows_body("idle"), 2, 1, sourceSegmentID="idle")
    await replace_batch(client, segment_id, rows_body("busy"), 2, 1, sourceSegmentID="busy")
    idle, busy = await sessions(db, segment_id)
    await db.execute("UPDATE replace_sessions SET last_batch_at = now() - interval '2 hours' WHERE id = $1",
                     idle["id"])

    assert await expire_idle_sessions(client.app[state.POOL], 3600) == 1
    assert await staging_tables(db) == [f"replace_{busy['id']}"]
    assert [session["status"] for session in await sessions(db, segment_id)] == ["expired", "open"]
    current = await snapshot(db, segment_id)
    assert (current["members"], current["segment"]) == (before["members"], before["segment"])

    # The rest of the expired share starts a new session: nothing commits until batch 1 comes again.
    late = await replace_batch(client, segment_id, rows_body("late"), 2, 2, sourceSegmentID="idle")
    assert late["replaceCommitted"] is False
    assert (await snapshot(db, segment_id))["members"] == before["members"]
    done = await replace_batch(client, segment_id, rows_body("again"), 2, 1, sourceSegmentID="idle")
    assert done["replaceCommitted"] is True
    assert await identities(db, segment_id) == {"again@x.com", "late@x.com"}


async def test_a_restart_in_the_middle_of_a_share_loses_nothing(aiohttp_client, settings, db):
    first = await app_client(aiohttp_client, settings)
    segment_id = await create_segment(first)
    await push_ok(first, segment_id, OLD)
    for number in (1, 2):
        await replace_batch(first, segment_id, rows_body(f"r{number}", "dup", value=str(number)), 4, number)
    await first.close()

    second = await app_client(aiohttp_client, settings)
    assert (await replace_batch(second, segment_id, rows_body("r3"), 4, 3))["replaceCommitted"] is False
    assert await identities(db, segment_id) == {"old1@x.com", "old2@x.com"}
    done = await replace_batch(second, segment_id, rows_body("r4"), 4, 4)
    assert (done["replaceCommitted"], done["audienceSize"]) == (True, 5)
    assert await audience(db, segment_id) == {
        "r1@x.com": {"email": "r1@x.com", "name": "1"}, "r2@x.com": {"email": "r2@x.com", "name": "2"},
        "dup@x.com": {"email": "dup@x.com", "name": "2"}, "r3@x.com": {"email": "r3@x.com", "name": "v"},
        "r4@x.com": {"email": "r4@x.com", "name": "v"}}


async def test_two_instances_share_one_database(aiohttp_client, settings, db):
    instances = [await app_client(aiohttp_client, settings) for _ in range(2)]
    segment_id = await create_segment(instances[0])
    await push_ok(instances[1], segment_id, OLD)
    total = 6
    batches = {number: rows_body(f"s{number}a", f"s{number}b", "shared", value=str(number))
               for number in range(1, total + 1)}
    expected = {f"s{number}{suffix}@x.com" for number in batches for suffix in "ab"} | {"shared@x.com"}

    # One after the other, alternating instances.
    results = [await replace_batch(instances[number % 2], segment_id, batches[number], total, number,
                                   sourceSegmentID="serial") for number in range(1, total + 1)]
    assert [result["replaceCommitted"] for result in results] == [False] * (total - 1) + [True]
    assert await identities(db, segment_id) == expected

    # All at once, shuffled, with two batches sent twice, spread over both instances.
    await push_ok(instances[0], segment_id, OLD, "REPLACE", sourceSegmentID="reset")
    sends = [*range(1, total + 1), 2, 5]
    random.Random(4).shuffle(sends)
    results = await asyncio.gather(*(
        push(instances[position % 2], segment_id, batches[number], "REPLACE", total=total, number=number,
             sourceSegmentID="concurrent") for position, number in enumerate(sends)))
    assert all(reply.status == 200 for reply in results), [reply.text for reply in results]
    # One batch completed the share; a late duplicate of that batch gets its recorded answer again.
    assert len({number for number, reply in zip(sends, results) if reply.result["replaceCommitted"]}) == 1
    assert await audience(db, segment_id) == {
        identity: {"email": identity, "name": identity[1] if identity != "shared@x.com" else "6"}
        for identity in expected}
    assert [s["status"] for s in await sessions(db, segment_id) if s["source_segment_id"] == "concurrent"] == [
        "committed"]
    assert await staging_tables(db) == []


async def test_batches_stage_without_the_segment_lock_and_the_commit_waits_for_it(client, db):
    segment_id, before = await old_segment(client, db)
    await replace_batch(client, segment_id, rows_body("p1"), 3, 1)
    transaction = db.transaction()
    await transaction.start()
    await db.execute("SELECT 1 FROM segments WHERE id = $1 FOR NO KEY UPDATE", int(segment_id))
    try:
        staged = await asyncio.wait_for(replace_batch(client, segment_id, rows_body("p2"), 3, 2), 10)
        assert staged["replaceCommitted"] is False
        completing = asyncio.ensure_future(replace_batch(client, segment_id, rows_body("p3"), 3, 3))
        await eventually(lambda: lock_waiters(db), "batch 3's commit to wait for the segment's lock")
        assert not completing.done()  # batch 3 is staged, its commit waits for the segment's lock
    finally:
        await transaction.rollback()
    done = await asyncio.wait_for(completing, 10)
    assert (done["replaceCommitted"], done["audienceSize"]) == (True, 3)
    assert await identities(db, segment_id) == {"p1@x.com", "p2@x.com", "p3@x.com"}
    assert (await snapshot(db, segment_id))["members"] != before["members"]


async def test_two_copies_of_a_batch_at_once_stage_one_body(client, db):
    segment_id, _ = await old_segment(client, db)
    for attempt in range(3):
        share = f"copies{attempt}"
        first, second = await asyncio.gather(
            push(client, segment_id, rows_body("a1", "a2", value="a"), "REPLACE", total=2, number=1,
                 sourceSegmentID=share),
            push(client, segment_id, rows_body("b1", value="b"), "REPLACE", total=2, number=1,
                 sourceSegmentID=share))
        assert (first.status, second.status) == (200, 200)
        done = await replace_batch(client, segment_id, rows_body("last"), 2, 2, sourceSegmentID=share)
        assert done["replaceCommitted"] is True
        assert await identities(db, segment_id) in (
            {"a1@x.com", "a2@x.com", "last@x.com"}, {"b1@x.com", "last@x.com"})
        assert done["audienceSize"] == len(await identities(db, segment_id))


async def staged_rows(db, segment_id: str) -> int:
    (session,) = [s for s in await sessions(db, segment_id) if s["status"] == "open"]
    return await db.fetchval(f'SELECT count(*) FROM staging."replace_{session["id"]}"')


async def test_a_batch_copied_straight_into_staging_keeps_every_character(client, db):
    """Batches 2 and 3 find their session open: their rows go to the staging table as COPY text, escaped
    there (batch 2), or as they are when the body holds nothing to escape (batch 3, CRLF line ends)."""
    segment_id, _ = await old_segment(client, db)
    await replace_batch(client, segment_id, rows_body("first"), 3, 1)
    odd = ['tab\there', 'new\nline', 'back\\slash', 'quo"te', '{braces}', 'a,b', 'NULL', '', ' sp ', '\\N', 'é✓']
    plain = ['{braces}', 'NULL', '', ' sp ', 'é✓', '{"x"}'[0] + '}', 'a b']
    expected = {}
    for number, values, newline in ((2, odd, "\n"), (3, plain, "\r\n")):
        rows = [(f"o{number}.{i}@x.com", value) for i, value in enumerate(values)]
        staged = await replace_batch(client, segment_id, csv_body(["email", "name"], rows, newline).decode(), 3,
                                     number)
        assert (staged["numAdded"], staged["numInvalid"]) == (str(len(values)), "0"), staged
        expected.update({identity: {"email": identity, "name": value} for identity, value in rows})
    stored = await audience(db, segment_id)
    assert expected.items() <= stored.items()
    assert len(stored) == len(expected) + 1


async def test_a_batch_failing_mid_body_after_its_rows_went_to_staging_leaves_nothing_staged(client, db):
    segment_id, before = await old_segment(client, db)
    await replace_batch(client, segment_id, rows_body("first"), 2, 1)
    rows = csv_body(["email", "name"], [(f"m{i}@x.com", "v") for i in range(20000)])
    truncated = gzip.compress(rows)[:-40]  # every row inflates, then the gzip stream ends inside its member
    failed = await push(client, segment_id, truncated, "REPLACE", total=2, number=2,
                        headers={"Content-Encoding": "gzip"})
    assert failed.status == 400 and "invalid_gzip" in failed.text
    assert await staged_rows(db, segment_id) == 1
    assert (await snapshot(db, segment_id))["members"] == before["members"]
    done = await replace_batch(client, segment_id, rows_body("second", "third"), 2, 2)
    assert (done["replaceCommitted"], done["audienceSize"]) == (True, 3)


async def test_a_batch_with_too_many_identities_to_count_in_memory_counts_them_in_sql(client, db, monkeypatch):
    monkeypatch.setattr(upload_module, "MAX_COUNTED_IDENTITIES", 2)
    segment_id, _ = await old_segment(client, db)
    await replace_batch(client, segment_id, rows_body("first"), 2, 1)
    staged = await replace_batch(client, segment_id, rows_body("r1", "r2", "r1", "r3", "r2", " R3"), 2, 2)
    assert (staged["numAdded"], staged["audienceSize"]) == ("3", 4)


async def test_a_session_a_batch_is_streaming_into_does_not_expire(client, db):
    """The batch holds its session (KEY SHARE) from before its body streams: the sweep skips the session
    instead of expiring it under the batch or waiting behind the body with the segment's lock."""
    segment_id, _ = await old_segment(client, db)
    await replace_batch(client, segment_id, rows_body("first"), 2, 1)
    await db.execute("UPDATE replace_sessions SET last_batch_at = now() - interval '2 hours' "
                     "WHERE segment_id = $1", int(segment_id))
    rest = asyncio.Event()

    async def body():
        yield rows_body("second").encode()
        await rest.wait()
        yield b"third@x.com,v\n"

    sending = asyncio.ensure_future(push(client, segment_id, body(), "REPLACE", total=2, number=2))

    async def copying() -> bool:
        return await db.fetchval("SELECT count(*) FROM pg_stat_activity "
                                 "WHERE query LIKE 'COPY \"staging\".%' AND state = 'active'") == 1
    try:
        await eventually(copying, "batch 2 to COPY into the staging table")
        assert await asyncio.wait_for(expire_idle_sessions(client.app[state.POOL], 3600), 10) == 0
    finally:
        rest.set()
    done = await asyncio.wait_for(sending, 10)
    assert done.status == 200 and '"replaceCommitted":true' in done.text.replace(" ", "")
    assert await identities(db, segment_id) == {"first@x.com", "second@x.com", "third@x.com"}
