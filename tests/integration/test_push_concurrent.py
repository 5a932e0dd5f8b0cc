"""ADD and REMOVE batches of one segment apply side by side (the spec's "Batches" section): for one
identity the result is that of some serial order of the calls, no deadlock reaches a client, the member
count stays exact, and a REPLACE commit or a metadata change still applies alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator

import asyncpg

from tests.helpers import eventually, lock_waiters, members_table
from tests.integration.manage_helpers import set_status
from tests.integration.push_helpers import audience, create_segment, csv_body, push, push_ok

HEADER = ("email", "tag")


def _rows(emails: list[str], tag: str) -> bytes:
    return csv_body(HEADER, [(email, tag) for email in emails])


@contextlib.asynccontextmanager
async def member_row_held(database_url: str, segment_id: str, identity: str) -> AsyncIterator[None]:
    """A member's row locked by another connection until the block ends: a push touching it waits there,
    inside its transaction, holding whatever segment lock it took."""
    conn = await asyncpg.connect(database_url)
    try:
        async with conn.transaction():
            assert await conn.fetchval(f"SELECT 1 FROM {members_table(segment_id)} WHERE identity = $1 FOR UPDATE",
                                       identity)
            yield
    finally:
        await conn.close()


async def _member_count(db, segment_id: str) -> tuple[int, int]:
    stored = await db.fetchval("SELECT member_count FROM segments WHERE id = $1", int(segment_id))
    return stored, await db.fetchval(f"SELECT count(*) FROM {members_table(segment_id)}")


async def test_add_batches_touching_one_identity_set_in_opposite_orders_never_deadlock(client, db):
    """8 batches × several rounds over overlapping identities, half of them in reverse order, some known,
    some new. Every call succeeds; each identity holds the tag of one batch that contained it; the count
    is the real one."""
    segment_id = await create_segment(client)
    known = [f"k{i:04d}@x.com" for i in range(300)]
    await push_ok(client, segment_id, _rows(known, "seed"))
    rng = random.Random(15)
    for round_number in range(4):
        fresh = [f"r{round_number}-{i:04d}@x.com" for i in range(300)]
        pool = known + fresh
        batches: dict[str, list[str]] = {}
        for number in range(8):
            emails = sorted(rng.sample(pool, 400))
            batches[f"r{round_number}b{number}"] = emails[::-1] if number % 2 else emails
        replies = await asyncio.gather(*(push(client, segment_id, _rows(emails, tag))
                                         for tag, emails in batches.items()))
        for reply in replies:
            assert reply.status == 200, reply.text
        members = await audience(db, segment_id)
        for email in pool:
            senders = {tag for tag, emails in batches.items() if email in emails}
            if senders:
                assert members[email]["tag"] in senders, (email, members[email], senders)
            elif email in known:
                assert email in members
            else:
                assert email not in members
        stored, real = await _member_count(db, segment_id)
        assert stored == real == len(members)
        added = sum(int(reply.result["numAdded"]) for reply in replies)
        assert added == len({e for emails in batches.values() for e in emails if e.startswith("r")})


async def test_add_and_remove_batches_side_by_side_keep_the_count_exact(client, db):
    """ADDs and REMOVEs of the same identities at once: each identity ends as some serial order leaves it
    (absent, or with the tag of an ADD that contained it), and numAdded/numRemoved sum to the change."""
    segment_id = await create_segment(client)
    everyone = [f"m{i:04d}@x.com" for i in range(400)]
    await push_ok(client, segment_id, _rows(everyone[:200], "seed"))
    rng = random.Random(7)
    for round_number in range(3):
        before = (await _member_count(db, segment_id))[1]
        calls = []
        for number in range(8):
            emails = sorted(rng.sample(everyone, 150), reverse=number % 2 == 1)
            calls.append(("ADD" if number % 3 else "REMOVE", f"r{round_number}b{number}", emails))
        replies = await asyncio.gather(*(push(client, segment_id, _rows(emails, tag), action)
                                         for action, tag, emails in calls))
        for reply in replies:
            assert reply.status == 200, reply.text
        members = await audience(db, segment_id)
        for email, member in members.items():
            adders = {tag for action, tag, emails in calls if action == "ADD" and email in emails}
            if adders:
                assert member["tag"] in adders or member["tag"].startswith(("seed", "r")), (email, member)
        stored, real = await _member_count(db, segment_id)
        assert stored == real == len(members)
        delta = sum(int(r.result.get("numAdded", 0)) - int(r.result.get("numRemoved", 0)) for r in replies)
        assert before + delta == real


async def test_an_add_applies_while_another_add_of_the_segment_waits(client, db, database_url):
    """The lock is shared: a batch blocked on one member's row (inside its transaction) does not hold back
    a batch of other identities. (With one exclusive segment lock the second one queued behind the first.)"""
    segment_id = await create_segment(client)
    await push_ok(client, segment_id, _rows(["held@x.com", "free@x.com"], "seed"))
    async with member_row_held(database_url, segment_id, "held@x.com"):
        blocked = asyncio.create_task(push(client, segment_id, _rows(["held@x.com"], "blocked")))
        await eventually(lambda: lock_waiters(db), "the first ADD waiting for the held row")
        result = await asyncio.wait_for(push_ok(client, segment_id, _rows(["free@x.com", "new@x.com"], "second")), 10)
        assert result["numAdded"] == "1"
        assert not blocked.done()
    assert (await blocked).status == 200
    assert {email: member["tag"] for email, member in (await audience(db, segment_id)).items()} == {
        "held@x.com": "blocked", "free@x.com": "second", "new@x.com": "second"}
    assert await _member_count(db, segment_id) == (3, 3)


async def test_a_replace_commit_waits_for_an_add_applying_and_still_wins(client, db, database_url):
    """A REPLACE whose commit comes while an ADD applies waits for it, then replaces everything before it."""
    segment_id = await create_segment(client)
    await push_ok(client, segment_id, _rows(["held@x.com", "old@x.com"], "seed"))
    async with member_row_held(database_url, segment_id, "held@x.com"):
        adding = asyncio.create_task(push(client, segment_id, _rows(["held@x.com", "added@x.com"], "add")))
        waiters = await eventually(lambda: lock_waiters(db), "the ADD waiting for the held row")
        replacing = asyncio.create_task(push(client, segment_id, _rows(["r1@x.com", "r2@x.com"], "replace"),
                                             "REPLACE"))
        await eventually(lambda: _more(db, waiters), "the REPLACE commit waiting for the ADD")
        assert not adding.done() and not replacing.done()
    assert (await adding).status == 200
    replaced = (await replacing).result
    assert replaced["replaceCommitted"] is True and replaced["audienceSize"] == 2
    assert {email: member["tag"] for email, member in (await audience(db, segment_id)).items()} == {
        "r1@x.com": "replace", "r2@x.com": "replace"}
    assert await _member_count(db, segment_id) == (2, 2)


async def test_a_status_change_waits_for_an_add_applying(client, db, database_url):
    """A metadata change applies alone: made inactive while an ADD applies, the segment takes that ADD
    (it came first), and the next one is refused."""
    segment_id = await create_segment(client)
    await push_ok(client, segment_id, _rows(["held@x.com"], "seed"))
    async with member_row_held(database_url, segment_id, "held@x.com"):
        adding = asyncio.create_task(push(client, segment_id, _rows(["held@x.com", "added@x.com"], "add")))
        waiters = await eventually(lambda: lock_waiters(db), "the ADD waiting for the held row")
        patching = asyncio.create_task(set_status(client, segment_id, "inactive"))
        await eventually(lambda: _more(db, waiters), "the status change waiting for the ADD")
        assert not patching.done()
    assert (await adding).status == 200
    assert (await patching)["status"] == "inactive"
    (await push(client, segment_id, _rows(["late@x.com"], "late"))).assert_failure(409)
    assert set(await audience(db, segment_id)) == {"held@x.com", "added@x.com"}


async def _more(db, before: list[int]) -> list[int]:
    return [pid for pid in await lock_waiters(db) if pid not in before]
