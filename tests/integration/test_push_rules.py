"""Pushed CSV batches follow the spec's "CSV rules", "Identity" and "Batches" sections exactly.

Every rejected request is checked twice: its status and failure envelope, and that nothing it carried
was stored (members, the segment's attributes, identity and size, REPLACE sessions and staging).
"""

import asyncio
import gzip
import shutil
import subprocess

import pytest

from tests.conftest import AUTH
from gateway.settings import MAX_ATTRIBUTES_CEILING
from tests.integration.pull_helpers import sync_rows
from tests.integration.push_helpers import (INTRUSIVE_BODY, app_client, attributes, audience, chunked,
                                            create_segment, csv_body, identities, overtaken_push, push, push_ok,
                                            seeded_segment, snapshot)
from tests.helpers import copy_in_progress, eventually

ACTIONS = ("ADD", "REPLACE", "REMOVE")


async def assert_rejected(client, db, segment_id: str, before: dict, status: int, body=INTRUSIVE_BODY,
                          **options) -> None:
    """ADD, REPLACE and REMOVE of this request each get ``status`` (failure envelope) and store nothing.

    ``body`` may be a function making a fresh streamed body for each request.
    """
    for action in ACTIONS:
        reply = await push(client, segment_id, body() if callable(body) else body, action, **options)
        reply.assert_failure(status)
        assert await snapshot(db, segment_id) == before, action


# -- counts ------------------------------------------------------------------------------------------

async def test_add_counts_new_identities_and_updates_existing_ones(client, db):
    segment_id = await create_segment(client)
    first = await push(client, segment_id, "email,name\na@x.com,Ann\nb@x.com,Bob\n")
    assert first.counts == {"segmentId": segment_id, "numReceived": "2", "numInvalid": "0", "numAdded": "2"}
    assert first.result["invalidSamples"] == []
    second = await push(client, segment_id, "email,name\nb@x.com,Bobby\nc@x.com,Cy\n")
    assert second.counts == {"segmentId": segment_id, "numReceived": "2", "numInvalid": "0", "numAdded": "1"}
    assert await audience(db, segment_id) == {
        "a@x.com": {"email": "a@x.com", "name": "Ann"},
        "b@x.com": {"email": "b@x.com", "name": "Bobby"},
        "c@x.com": {"email": "c@x.com", "name": "Cy"},
    }
    assert await db.fetchval("SELECT member_count FROM segments WHERE id = $1", int(segment_id)) == 3


async def test_same_identity_twice_counts_once_and_the_last_row_wins(client, db):
    segment_id = await create_segment(client)
    await push_ok(client, segment_id, "email,name\nold@x.com,Old\n")
    body = "email,name\na@x.com,1\nb@x.com,2\nold@x.com,3\na@x.com,4\n  A@X.com ,5\nOLD@x.com,6\n"
    result = await push_ok(client, segment_id, body)
    assert result["numReceived"] == "6"
    assert result["numInvalid"] == "0"
    assert result["numAdded"] == "2"
    assert await audience(db, segment_id) == {
        "a@x.com": {"email": "a@x.com", "name": "5"},
        "b@x.com": {"email": "b@x.com", "name": "2"},
        "old@x.com": {"email": "old@x.com", "name": "6"},
    }


async def test_remove_counts_only_members_actually_removed(client, db):
    segment_id = await create_segment(client)
    await push_ok(client, segment_id, "email,name\na@x.com,A\nb@x.com,B\nc@x.com,C\n")
    removed = await push(client, segment_id, "email\nA@x.com\na@x.com\nnobody@x.com\n\n", "REMOVE")
    assert removed.counts == {"segmentId": segment_id, "numReceived": "3", "numInvalid": "0", "numRemoved": "1"}
    assert await identities(db, segment_id) == {"b@x.com", "c@x.com"}
    again = await push_ok(client, segment_id, "email\na@x.com\n", "REMOVE")
    assert again["numRemoved"] == "0"
    assert await db.fetchval("SELECT member_count FROM segments WHERE id = $1", int(segment_id)) == 2


async def test_remove_reads_only_the_identity_column(client, db):
    """Its other columns never become attributes (they would show as empty columns in every export)."""
    segment_id, _ = await seeded_segment(client, db)
    removed = await push_ok(client, segment_id, "Extra,email,name\n1,a@x.com,Changed\n2,nobody@x.com,N\n",
                            "REMOVE")
    assert removed["numRemoved"] == "1"
    assert await attributes(db, segment_id) == ["email", "name"]
    assert await audience(db, segment_id) == {"b@x.com": {"email": "b@x.com", "name": "Bob"}}
    assert (await sync_rows(client, segment_id))[0] == ["email", "name"]


async def test_remove_on_a_segment_without_data_changes_no_column(client, db):
    segment_id = await create_segment(client)
    before = await snapshot(db, segment_id)
    assert (await push_ok(client, segment_id, "id,email,other\n1,a@x.com,x\n", "REMOVE"))["numRemoved"] == "0"
    assert await snapshot(db, segment_id) == before
    await push_ok(client, segment_id, "name,email\nAnn,a@x.com\n")  # the first ADD still fixes the identity
    assert await db.fetchrow("SELECT identity_attribute, attributes FROM segments WHERE id = $1",
                             int(segment_id)) == ("email", ["name", "email"])


async def test_remove_in_the_source_documents_shape_reads_only_the_identity(client, db):
    """The source document's REMOVE body: other column names, every column sent. Only the identity (here the
    first column) is read; the other columns never become attributes nor change the members left."""
    segment_id = await create_segment(client)
    await push_ok(client, segment_id, "Email,FirstName\na@x.com,Ann\nb@x.com,Bob\n")
    removed = await push_ok(client, segment_id, "EmailAddress,First,Gender\nA@x.com,Tina,F\nb@x.com,James,M\n"
                                                "c@x.com,Joan,F\n", "REMOVE")
    assert removed["numRemoved"] == "2"
    assert await attributes(db, segment_id) == ["Email", "FirstName"]
    assert await db.fetchval("SELECT identity_attribute FROM segments WHERE id = $1", int(segment_id)) == "Email"
    await push_ok(client, segment_id, "Email,FirstName\nd@x.com,Dan\n")
    assert await audience(db, segment_id) == {"d@x.com": {"Email": "d@x.com", "FirstName": "Dan"}}


# -- identity ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("header, ids, identity_attribute, identity", [
    ("id,name,Work_EMail", None, "Work_EMail", "k@x.com"),
    ("id,name", None, "id", "K1"),
    ("id,name,Work_EMail", "NAME", "name", "Nm"),
    ("id,name,Work_EMail", "missing", "Work_EMail", "k@x.com"),
    ("id,name", "missing", "id", "K1"),
])
async def test_first_upload_fixes_the_identity_column(client, db, header, ids, identity_attribute, identity):
    segment_id = await create_segment(client)
    values = {"id": "K1", "name": " Nm ", "Work_EMail": "K@X.com"}
    row = ",".join(values[name] for name in header.split(","))
    await push_ok(client, segment_id, f"{header}\n{row}\n", ids=ids)
    stored = await db.fetchval("SELECT identity_attribute FROM segments WHERE id = $1", int(segment_id))
    assert stored.lower() == identity_attribute.lower()
    assert await identities(db, segment_id) == {identity}
    detail = (await client.get(f"/v1/segments/{segment_id}", headers=AUTH))
    assert [item["name"] for item in (await detail.json())["result"]["segmentAttributes"]] == header.split(",")


@pytest.mark.parametrize("header, row, ids, identity", [
    ("name,EMAIL,id", "Zed,Z@x.com,7", None, "z@x.com"),  # by name, case-insensitively
    ("email,name,id", "Y@x.com,Yan,8", "NAME", "Yan"),  # by ids
    ("name,id", "Nomail,9", None, "Nomail"),  # no identity column: the first column
])
async def test_later_uploads_find_the_identity_by_ids_then_name_then_first_column(client, db, header, row, ids,
                                                                                 identity):
    segment_id = await create_segment(client)
    await push_ok(client, segment_id, "id,email,name\n1,a@x.com,Ann\n")
    result = await push_ok(client, segment_id, f"{header}\n{row}\n", ids=ids)
    assert result["numAdded"] == "1"
    assert await identities(db, segment_id) == {"a@x.com", identity}
    assert await db.fetchval("SELECT identity_attribute FROM segments WHERE id = $1", int(segment_id)) == "email"


async def test_a_first_upload_overtaken_by_another_is_applied_as_a_later_upload(streaming_client, db):
    """Calls apply one at a time in the order they reach the segment's lock: an upload still streaming
    when another one fixes the identity attribute is then a later upload (identity found by name)."""
    segment_id = await create_segment(streaming_client)
    # the first upload applied while this one streams: identity "id"
    reply = await overtaken_push(streaming_client, db, segment_id, b"name,id\nOne,K1\n", b"Two,K2\n", "id,name\nK0,Zero\n")
    assert reply.status == 200, reply.text
    assert reply.result["numAdded"] == "2"
    assert await db.fetchval("SELECT identity_attribute FROM segments WHERE id = $1", int(segment_id)) == "id"
    assert await audience(db, segment_id) == {"K0": {"id": "K0", "name": "Zero"}, "K1": {"id": "K1", "name": "One"},
                                              "K2": {"id": "K2", "name": "Two"}}


async def test_a_non_ascii_email_is_one_member_whether_normalised_while_streaming_or_under_the_lock(streaming_client, db):
    """The identity rule is applied in Python on both paths: while the body streams, and under the lock when
    another first upload fixed another identity column meanwhile (SQL's ``lower`` under ``COLLATE "C"``
    turned "ÉLODIE@Example.com" into "Élodie@example.com": a second member)."""
    segment_id = await create_segment(streaming_client)
    # this push streams as a first upload (identity: backup_email, the first email column); the other one
    # fixes "email" meanwhile, so the column holding ÉLODIE is normalised only under the lock
    reply = await overtaken_push(streaming_client, db, segment_id, "backup_email,email\nb@x.com,\u00a0ÉLODIE@Example.com \n".encode(),
                                 "c@x.com,ZOË@Example.com\n".encode(),
                                 "email,backup_email\nÉLODIE@Example.com,a@x.com\n", ids="email")
    assert (reply.result["numAdded"], reply.result["numInvalid"]) == ("1", "0")
    assert await identities(db, segment_id) == {"élodie@example.com", "zoë@example.com"}


async def test_identity_is_trimmed_and_lowercased_only_in_email_columns(client, db):
    emails = await create_segment(client)
    await push_ok(client, emails, "Customer_EMAIL,score\n \t MiXeD@Example.COM\t ,1\n")
    assert await audience(db, emails) == {"mixed@example.com": {"Customer_EMAIL": "mixed@example.com", "score": "1"}}

    plain = await create_segment(client)
    await push_ok(client, plain, "id,email\n  AbC-9 ,KeepCase@X.com\n", ids="id")
    assert await audience(db, plain) == {"AbC-9": {"id": "AbC-9", "email": "KeepCase@X.com"}}


async def test_attributes_are_the_union_of_headers_in_first_seen_order(client, db):
    segment_id = await create_segment(client)
    await push_ok(client, segment_id, "email,a\nx@x.com,1\n")
    await push_ok(client, segment_id, "B,EMAIL,A\nbee,y@x.com,2\n")
    await push_ok(client, segment_id, "c,email\nsea,z@x.com\n")
    detail = await client.get(f"/v1/segments/{segment_id}", headers=AUTH)
    assert (await detail.json())["result"]["segmentAttributes"] == [
        {"name": "email"}, {"name": "a"}, {"name": "B"}, {"name": "c"}]
    stored = {identity: {name: value or None for name, value in attrs.items()}
              for identity, attrs in (await audience(db, segment_id)).items()}
    assert stored == {
        "x@x.com": {"email": "x@x.com", "a": "1", "B": None, "c": None},
        "y@x.com": {"email": "y@x.com", "a": "2", "B": "bee", "c": None},
        "z@x.com": {"email": "z@x.com", "a": None, "B": None, "c": "sea"},
    }


# -- invalid rows ------------------------------------------------------------------------------------

async def test_invalid_rows_are_counted_sampled_by_line_and_never_fail_the_batch(client, db):
    segment_id = await create_segment(client)
    body = (b"email,name\n"  # 1
            b"a@x.com,ok\n"  # 2
            b"b@x.com\n"  # 3 too few fields
            b"c@x.com,x,extra\n"  # 4 too many
            b"\n"  # 5 blank: skipped, not counted
            b",no identity\n"  # 6 empty identity
            b'"  \t ",blank identity\n'  # 7 empty after trimming
            b"d@x.com,bad \xff\xfe bytes\n"  # 8 not UTF-8
            b'"e@x.com","multi\nline"\n'  # 9-10 valid
            b"f@x.com,ok\n"  # 11
            b"\n")
    result = await push_ok(client, segment_id, body)
    assert (result["numReceived"], result["numInvalid"], result["numAdded"]) == ("8", "5", "3")
    assert [sample["line"] for sample in result["invalidSamples"]] == [3, 4, 6, 7, 8]
    assert all(sample["reason"] for sample in result["invalidSamples"])
    assert await audience(db, segment_id) == {"a@x.com": {"email": "a@x.com", "name": "ok"},
                                              "e@x.com": {"email": "e@x.com", "name": "multi\nline"},
                                              "f@x.com": {"email": "f@x.com", "name": "ok"}}


async def test_invalid_samples_are_the_first_ten_by_line(client):
    segment_id = await create_segment(client)
    lines = [b"email,name"]
    for number in range(2, 32):  # alternate the parser's rejections and empty identities
        lines.append([b"%d@x.com,ok" % number, b"only-one-field", b",empty"][number % 3])
    result = await push_ok(client, segment_id, b"\n".join(lines) + b"\n")
    invalid_lines = [number for number in range(2, 32) if number % 3]
    assert result["numReceived"] == "30"
    assert result["numInvalid"] == str(len(invalid_lines))
    assert [sample["line"] for sample in result["invalidSamples"]] == invalid_lines[:10]


NUL_BODIES = {
    # all in one read: a NUL row parsed together with the header, and a last row without a newline
    "one-read": [b"email,name\nn1@x.com,a\x00b\nok@x.com,fine\nn2@x.com,c\x00d"],
    # streamed: each NUL arrives in one read, the end of its row in the next
    "split-rows": [b"email,name\nok@x.com,fine\nn1@x.com,a\x00", b"b\nn2@x.com,\"c\x00", b"d\"\n"],
}


@pytest.mark.parametrize("parts", NUL_BODIES.values(), ids=NUL_BODIES)
async def test_a_nul_byte_makes_its_row_invalid_not_the_batch(client, db, parts):
    """PostgreSQL text cannot hold NUL: such a row must be rejected on its own, wherever the reads split."""
    segment_id = await create_segment(client)
    body = parts[0] if len(parts) == 1 else chunked(*parts, pause=0.05)
    reply = await push(client, segment_id, body)
    assert reply.status == 200, reply.text
    assert (reply.result["numReceived"], reply.result["numInvalid"], reply.result["numAdded"]) == ("3", "2", "1")
    assert await identities(db, segment_id) == {"ok@x.com"}


@pytest.mark.parametrize("ending", ["", "\n", "\nc@x.com,more\n"])
async def test_an_unterminated_quote_at_the_end_makes_the_last_row_invalid(client, db, ending):
    segment_id = await create_segment(client)
    result = await push_ok(client, segment_id, f'email,name\na@x.com,ok\nb@x.com,"open{ending}')
    assert (result["numReceived"], result["numInvalid"], result["numAdded"]) == ("2", "1", "1")
    assert [sample["line"] for sample in result["invalidSamples"]] == [3]
    assert await identities(db, segment_id) == {"a@x.com"}


async def test_a_field_over_the_maximum_makes_its_row_invalid(aiohttp_client, settings, db):
    client = await app_client(aiohttp_client, settings, max_field_bytes=10)
    segment_id = await create_segment(client)
    body = ("email,v\n"
            "a@x.com,1234567890\n"  # 2: exactly 10 bytes
            "b@x.com,12345678901\n"  # 3: 11 bytes
            "c@x.com,ééééé\n"  # 4: 10 bytes in UTF-8
            "d@x.com,ééééé1\n"  # 5: 11 bytes
            'e@x.com,"12,45""7890"\n'  # 6: 10 bytes once unquoted
            "long-name@x.com,1\n")  # 7: the identity itself is too long
    result = await push_ok(client, segment_id, body)
    assert (result["numReceived"], result["numInvalid"], result["numAdded"]) == ("6", "3", "3")
    assert [sample["line"] for sample in result["invalidSamples"]] == [3, 5, 7]
    assert await audience(db, segment_id) == {"a@x.com": {"email": "a@x.com", "v": "1234567890"},
                                              "c@x.com": {"email": "c@x.com", "v": "ééééé"},
                                              "e@x.com": {"email": "e@x.com", "v": '12,45"7890'}}


async def test_a_row_of_many_fields_each_within_the_maximum_is_valid(client, db):
    """The limit is per field (64 KiB by default); a row is not invalid for being long overall."""
    segment_id = await create_segment(client)
    field = "x" * 60_000
    names = ["email", *(f"f{i}" for i in range(8))]
    body = (",".join(names) + "\n" + ",".join(["big@x.com", *[field] * 8]) + "\nsmall@x.com" + ",s" * 8 + "\n")
    result = await push_ok(client, segment_id, body)
    assert (result["numReceived"], result["numInvalid"], result["invalidSamples"]) == ("2", "0", [])
    assert (await audience(db, segment_id))["big@x.com"]["f7"] == field


# -- framing -----------------------------------------------------------------------------------------

async def test_blank_lines_are_skipped_not_counted_but_keep_line_numbers(client, db):
    segment_id = await create_segment(client)
    body = "email,name\n\n\na@x.com,1\n\r\nonly-one-field\nb@x.com,2\n\n,empty\n\n\n"
    result = await push_ok(client, segment_id, body)
    assert (result["numReceived"], result["numInvalid"], result["numAdded"]) == ("4", "2", "2")
    assert [sample["line"] for sample in result["invalidSamples"]] == [6, 9]
    assert await identities(db, segment_id) == {"a@x.com", "b@x.com"}


@pytest.mark.parametrize("bom", [b"", b"\xef\xbb\xbf"], ids=["no-bom", "bom"])
@pytest.mark.parametrize("newline", [b"\n", b"\r\n"], ids=["lf", "crlf"])
async def test_bom_and_line_endings(client, db, bom, newline):
    segment_id = await create_segment(client)
    lines = [b"Email,Name", b"A@x.com,Ann", b'b@x.com,"two' + newline + b'lines"', b"c@x.com,"]
    result = await push_ok(client, segment_id, bom + newline.join(lines) + newline)
    assert (result["numReceived"], result["numInvalid"]) == ("3", "0")
    assert await attributes(db, segment_id) == ["Email", "Name"]
    assert await audience(db, segment_id) == {
        "a@x.com": {"Email": "a@x.com", "Name": "Ann"},
        "b@x.com": {"Email": "b@x.com", "Name": "two" + newline.decode() + "lines"},
        "c@x.com": {"Email": "c@x.com", "Name": ""},
    }


async def test_gzip_bodies_are_accepted(client, db):
    segment_id = await create_segment(client)
    body = gzip.compress("email,name\nA@x.com,Ünïcode\nb@x.com,\"x,y\"\n".encode())
    reply = await push(client, segment_id, body, headers={"Content-Encoding": "gzip"})
    assert reply.status == 200, reply.text
    assert reply.counts == {"segmentId": segment_id, "numReceived": "2", "numInvalid": "0", "numAdded": "2"}
    assert await audience(db, segment_id) == {"a@x.com": {"email": "a@x.com", "name": "Ünïcode"},
                                              "b@x.com": {"email": "b@x.com", "name": "x,y"}}


GZIP = {"Content-Encoding": "gzip"}
MANY_ROWS = b"email,name\n" + b"".join(b"m%04d@x.com,name %d\n" % (i, i) for i in range(3000))


def pigz(data: bytes) -> bytes:
    """What ``pigz -c`` writes for ``data`` (one member, made of 32 KiB blocks compressed in parallel)."""
    return subprocess.run(["pigz", "-c", "-b", "32", "-p", "2"], input=data, capture_output=True, check=True).stdout


@pytest.mark.parametrize("maker", ["concatenated", "pigz"])
async def test_a_body_of_several_gzip_members_is_read_to_its_end(client, db, maker):
    """``cat a.gz b.gz c.gz`` made by Python's gzip or by pigz (``pigz -c part >> body.gz``): a REPLACE takes
    every row of every member, not only the first member's."""
    if maker == "pigz" and shutil.which("pigz") is None:
        pytest.skip("pigz is not installed")
    segment_id, _ = await seeded_segment(client, db)
    third = len(MANY_ROWS) // 3
    compress = gzip.compress if maker == "concatenated" else pigz
    body = b"".join(compress(MANY_ROWS[i:i + third]) for i in range(0, len(MANY_ROWS), third))
    assert gzip.decompress(body) == MANY_ROWS
    result = await push_ok(client, segment_id, body, "REPLACE", headers=GZIP)
    assert (result["numReceived"], result["numAdded"], result["audienceSize"]) == ("3000", "3000", 3000)
    assert await identities(db, segment_id) == {f"m{i:04d}@x.com" for i in range(3000)}


@pytest.mark.parametrize("trailer", [b"!", b"\x00", b"\x1f\x8b"], ids=["garbage", "nul", "half-magic"])
async def test_bytes_after_the_last_gzip_member_are_400_and_apply_nothing(client, db, trailer):
    segment_id, before = await seeded_segment(client, db)
    body = gzip.compress(INTRUSIVE_BODY[:20]) + gzip.compress(INTRUSIVE_BODY[20:]) + trailer
    await assert_rejected(client, db, segment_id, before, 400, body, headers=GZIP)
    reply = await push(client, segment_id, body, "REPLACE", headers=GZIP)
    reply.assert_failure(400, "invalid_gzip")


@pytest.mark.parametrize("content_type", [
    "text/csv", "text/csv; charset=utf-8", "text/plain", "application/csv", "application/octet-stream", None])
async def test_csv_content_types_are_accepted(client, db, content_type):
    segment_id = await create_segment(client)
    if content_type is None:
        reply = await push(client, segment_id, "email\na@x.com\n", headers={"Content-Type": ""},
                           skip_auto_headers=["Content-Type"])
    else:
        reply = await push(client, segment_id, "email\na@x.com\n", headers={"Content-Type": content_type})
    assert reply.result["numAdded"] == "1"
    assert await identities(db, segment_id) == {"a@x.com"}


async def test_matching_share_action_is_accepted(client, db):
    segment_id = await create_segment(client)
    await push_ok(client, segment_id, "email\na@x.com\nb@x.com\n", shareAction="ADD")
    await push_ok(client, segment_id, "email\na@x.com\n", "REMOVE", shareAction="REMOVE")
    result = await push_ok(client, segment_id, "email\nc@x.com\n", "REPLACE", total=1, number=1,
                           shareAction="REPLACE")
    assert result["replaceCommitted"] is True
    assert await identities(db, segment_id) == {"c@x.com"}


@pytest.mark.parametrize("query", ["totalBatchCount=&currentBatchNumber=", "currentBatchNumber=&totalBatchCount="])
async def test_empty_batch_parameters_count_as_absent(client, db, query):
    segment_id, _ = await seeded_segment(client, db)
    result = await push_ok(client, segment_id, "email\nc@x.com\n", "REPLACE", query=query)
    assert (result["replaceCommitted"], result["audienceSize"]) == (True, 1)
    assert await db.fetchrow("SELECT total_batches, batch_number FROM uploads WHERE segment_id = $1 "
                             "ORDER BY id DESC LIMIT 1", int(segment_id)) == (1, 1)


# -- rejected requests: nothing applied ---------------------------------------------------------------

@pytest.mark.parametrize("query", [
    "totalBatchCount=2",
    "currentBatchNumber=1",
    "totalBatchCount=two&currentBatchNumber=1",
    "totalBatchCount=2&currentBatchNumber=1.0",
    "totalBatchCount=2&currentBatchNumber=-1",
    "totalBatchCount=&currentBatchNumber=1",
    "totalBatchCount=0&currentBatchNumber=0",
    "totalBatchCount=2&currentBatchNumber=0",
    "totalBatchCount=2&currentBatchNumber=3",
])
async def test_bad_batch_parameters_are_400_and_apply_nothing(client, db, query):
    segment_id, before = await seeded_segment(client, db)
    await assert_rejected(client, db, segment_id, before, 400, query=query)


@pytest.mark.parametrize("action, share_action", [
    ("ADD", "REPLACE"), ("ADD", "REMOVE"), ("ADD", "DELETE"), ("REPLACE", "ADD"), ("REPLACE", "REMOVE"),
    ("REMOVE", "ADD"), ("REMOVE", "REPLACE"), ("ADD", "whatever"),
])
async def test_share_action_not_matching_the_method_is_400(client, db, action, share_action):
    segment_id, before = await seeded_segment(client, db)
    reply = await push(client, segment_id, INTRUSIVE_BODY, action, total=1, number=1, shareAction=share_action)
    reply.assert_failure(400)
    assert await snapshot(db, segment_id) == before


@pytest.mark.parametrize("body", [
    b"",
    b"\n\r\n\n",
    b"email,,name\nnew@x.com,1,2\n",
    b" ,email\n1,new@x.com\n",
    b"email,name,Name\nnew@x.com,1,2\n",
    b"Email,name,EMAIL\nnew@x.com,1,2\n",
], ids=["empty-body", "only-blank-lines", "empty-name", "blank-name", "duplicate-case", "duplicate-email"])
async def test_bad_header_is_400_and_applies_nothing(client, db, body):
    segment_id, before = await seeded_segment(client, db)
    await assert_rejected(client, db, segment_id, before, 400, body)


async def test_unknown_or_foreign_segment_is_404(client, db, make_key):
    segment_id, before = await seeded_segment(client, db)
    await assert_rejected(client, db, segment_id, before, 404, headers=await make_key("admin", endpoint="other"))
    await assert_rejected(client, db, "987654", await snapshot(db, "987654"), 404)


@pytest.mark.parametrize("headers", [
    {"Content-Type": "application/json"},
    {"Content-Type": "application/x-www-form-urlencoded"},
    {"Content-Encoding": "br"},
    {"Content-Encoding": "deflate"},
    {"Content-Encoding": "compress"},
], ids=["json", "form", "br", "deflate", "compress"])
async def test_non_csv_bodies_and_unknown_encodings_are_415(client, db, headers):
    segment_id, before = await seeded_segment(client, db)
    await assert_rejected(client, db, segment_id, before, 415, headers=headers)


# -- attributes are bounded (GATEWAY_MAX_ATTRIBUTES) ----------------------------------------------------

def wide_body(columns: int, first: int = 1) -> bytes:
    """``email,c<first>,…`` with ``columns`` columns in all, and two rows."""
    names = ["email", *(f"c{i}" for i in range(first, first + columns - 1))]
    return csv_body(names, [[f"{who}@x.com", *("v" * (columns - 1))] for who in ("w1", "w2")])


async def assert_adding_refused(client, db, segment_id: str, body: bytes) -> None:
    """ADD and REPLACE of ``body`` would take the segment past the limit: 400, nothing stored."""
    before = await snapshot(db, segment_id)
    for action in ("ADD", "REPLACE"):
        (await push(client, segment_id, body, action)).assert_failure(400, "too_many_attributes")
        assert await snapshot(db, segment_id) == before, action


async def test_a_segment_at_the_largest_limit_takes_uploads_and_exports(aiohttp_client, settings, db):
    """The ceiling of GATEWAY_MAX_ATTRIBUTES works end to end: push, REPLACE, direct export."""
    client = await app_client(aiohttp_client, settings, max_attributes=MAX_ATTRIBUTES_CEILING)
    segment_id = await create_segment(client)
    body = wide_body(MAX_ATTRIBUTES_CEILING)
    assert (await push_ok(client, segment_id, body))["numAdded"] == "2"
    assert (await push_ok(client, segment_id, body, "REPLACE"))["audienceSize"] == 2
    header, rows = await sync_rows(client, segment_id)
    assert len(header) == MAX_ATTRIBUTES_CEILING and [len(row) for row in rows] == [MAX_ATTRIBUTES_CEILING] * 2
    await assert_adding_refused(client, db, segment_id, wide_body(2, first=MAX_ATTRIBUTES_CEILING))


async def test_a_header_wider_than_the_limit_is_400_and_applies_nothing(client, db):
    """1,700 columns were a 500 (PostgreSQL's 1,600 columns per table) before the limit; REMOVE included."""
    segment_id, before = await seeded_segment(client, db)
    await assert_rejected(client, db, segment_id, before, 400, wide_body(1700))
    reply = await push(client, segment_id, wide_body(1001), "REMOVE")
    reply.assert_failure(400, "too_many_attributes")


async def test_attributes_past_the_limit_are_400_counting_those_the_segment_has(aiohttp_client, settings, db):
    client = await app_client(aiohttp_client, settings, max_attributes=5)
    segment_id, _ = await seeded_segment(client, db)  # email, name
    await assert_adding_refused(client, db, segment_id, b"email,a,b,c,d\nnew@x.com,1,2,3,4\n")
    # REMOVE adds no attribute: its other columns count only toward the header's width
    assert (await push_ok(client, segment_id, "email,a,b,c,d\nb@x.com,1,2,3,4\n", "REMOVE"))["numRemoved"] == "1"
    await push_ok(client, segment_id, "email,a,b,c\nnew@x.com,1,2,3\n")
    assert await attributes(db, segment_id) == ["email", "name", "a", "b", "c"]
    await assert_adding_refused(client, db, segment_id, b"email,z\nz@x.com,1\n")
    # a segment at the limit still takes uploads that add nothing
    assert (await push_ok(client, segment_id, "email,C,A\nq@x.com,3,1\n"))["numAdded"] == "1"


@pytest.mark.parametrize("action", ["ADD", "REPLACE"])
async def test_the_limit_holds_for_uploads_streaming_side_by_side(aiohttp_client, settings, db, action):
    """Checked again under the segment's lock: another upload added attributes while this body streamed
    (an ADD body larger than the read-ahead streams: here every one does)."""
    client = await app_client(aiohttp_client, settings, max_attributes=4, add_read_ahead_bytes=0)
    segment_id, _ = await seeded_segment(client, db)  # email, name
    release = asyncio.Event()

    async def slow_body():
        yield b"email,first\nslow1@x.com,1\n"
        await release.wait()
        yield b"slow2@x.com,2\n"

    slow = asyncio.ensure_future(push(client, segment_id, slow_body(), action))
    try:
        await eventually(lambda: copy_in_progress(db), "the slow upload's COPY to start")  # planned: 3 attributes
        await push_ok(client, segment_id, "email,second,third\nfast@x.com,2,3\n")  # 4 attributes
        after_fast = await snapshot(db, segment_id)
    finally:
        release.set()
    (await slow).assert_failure(400, "too_many_attributes")
    assert await snapshot(db, segment_id) == after_fast


MAX_BODY = 256


async def test_a_body_of_exactly_the_maximum_is_accepted(aiohttp_client, settings, db):
    client = await app_client(aiohttp_client, settings, max_body_bytes=MAX_BODY)
    segment_id = await create_segment(client)
    body = b"email,name\na@x.com,"
    body += b"n" * (MAX_BODY - len(body) - 1) + b"\n"
    assert len(body) == MAX_BODY
    assert (await push_ok(client, segment_id, body))["numAdded"] == "1"


@pytest.mark.parametrize("how", ["declared", "chunked", "gzip"])
async def test_a_body_over_the_maximum_is_413_and_applies_nothing(aiohttp_client, settings, db, how):
    client = await app_client(aiohttp_client, settings, max_body_bytes=MAX_BODY)
    segment_id, before = await seeded_segment(client, db)
    head = b"email,name,extra\nnew@x.com,New,1\n"
    rows = b"".join(b"n%03d@x.com,N,1\n" % i for i in range(20))
    assert len(head + rows) > MAX_BODY
    if how == "declared":
        await assert_rejected(client, db, segment_id, before, 413, head + rows)
    elif how == "chunked":  # the header is parsed (and the COPY begun) before the body turns out too large
        await assert_rejected(client, db, segment_id, before, 413, lambda: chunked(head, rows, pause=0.05))
    else:
        await assert_rejected(client, db, segment_id, before, 413, gzip.compress(head + rows),
                              headers={"Content-Encoding": "gzip"})


@pytest.mark.parametrize("how", ["not-gzip", "truncated", "corrupt"])
async def test_invalid_gzip_is_400_and_applies_nothing(client, db, how):
    segment_id, before = await seeded_segment(client, db)
    compressed = gzip.compress(INTRUSIVE_BODY + b"".join(b"n%03d@x.com,N,1\n" % i for i in range(50)))
    body = {"not-gzip": INTRUSIVE_BODY, "truncated": compressed[:-12],
            "corrupt": compressed[:40] + bytes(b ^ 0x55 for b in compressed[40:])}[how]
    await assert_rejected(client, db, segment_id, before, 400, body, headers={"Content-Encoding": "gzip"})


async def test_an_add_whose_one_known_identity_comes_last_applies_every_row(client, db):
    """ADD first inserts as if every identity were new; here the one member it already holds sorts last, so
    that attempt inserts every other row before it stops, and the merge redoes the batch: the counts and the
    members are those of the merge alone."""
    segment_id = await create_segment(client)
    await push_ok(client, segment_id, "email,name\nzz@x.com,Old\n")
    body = "email,name\n" + "".join(f"n{i:03d}@x.com,New{i}\n" for i in range(200)) + "ZZ@x.com,Newer\n"
    result = await push_ok(client, segment_id, body)
    assert (result["numReceived"], result["numInvalid"], result["numAdded"]) == ("201", "0", "200")
    members = await audience(db, segment_id)
    assert members["zz@x.com"] == {"email": "zz@x.com", "name": "Newer"}
    assert len(members) == 201 and members["n199@x.com"]["name"] == "New199"
    assert await db.fetchval("SELECT member_count FROM segments WHERE id = $1", int(segment_id)) == 201
