"""The csv-spectrum corpus, pushed as it is: what is stored equals the corpus's expected parse, byte for byte.

Each file is sent whole, and streamed in tiny chunks (fields and CRLFs cut across reads).
"""

import json

import pytest

from tests.conftest import CSV_SPECTRUM as CORPUS
from tests.conftest import CSV_SPECTRUM_FILES as FILES
from tests.integration.push_helpers import attributes, audience, chunked, create_segment, push

SEND = {
    "whole": lambda body: (body, {}),
    "chunks-of-3": lambda body: (chunked(*(body[i:i + 3] for i in range(0, len(body), 3)), pause=0.001), {}),
}


@pytest.mark.parametrize("how", SEND)
@pytest.mark.parametrize("path", FILES, ids=[path.stem for path in FILES])
async def test_corpus_file_is_stored_exactly(client, db, path, how):
    expected = json.loads((CORPUS / "json" / f"{path.stem}.json").read_text(encoding="utf-8"))
    header = list(expected[0])
    assert not any("email" in name.lower() for name in header)  # so the identity is the first column
    segment_id = await create_segment(client, path.stem)
    body, headers = SEND[how](path.read_bytes())

    reply = await push(client, segment_id, body, headers=headers)
    assert reply.status == 200, reply.text
    assert reply.counts == {"segmentId": segment_id, "numReceived": str(len(expected)), "numInvalid": "0",
                            "numAdded": str(len(expected))}
    assert await attributes(db, segment_id) == header
    assert await audience(db, segment_id) == {row[header[0]]: row for row in expected}
