import asyncio, dataclasses, gzip, io, json
from gateway.app import create_app
from tests.conftest import AUTH

async def seg(client):
    r = await client.post("/v1/segments", json={"name": "s"}, headers=AUTH)
    return (await r.json())["result"]["segmentId"]

async def send(client, sid, body, method="POST", q="", headers=None):
    h = {**AUTH, "Content-Type": "text/csv", **(headers or {})}
    if isinstance(body, bytes): body = io.BytesIO(body)
    r = await client.request(method, f"/v1/segments/{sid}/data{q}", data=body, headers=h)
    return r.status, await r.text()

async def state(db, sid):
    print(await db.fetchrow("SELECT attributes, identity_attribute, member_count FROM segments WHERE id=$1", int(sid)))

async def test_leak(aiohttp_client, settings, db):
    client = await aiohttp_client(create_app(dataclasses.replace(settings, max_body_bytes=200)))
    sid = await seg(client)
    print(await send(client, sid, b"email,a\nx@y.com,1\n"))
    await state(db, sid)
    async def gen():
        yield b"email,a,NEW\nq@y.com,1,2\n"
        await asyncio.sleep(0.1)
        for i in range(30):
            yield b"z%d@y.com,1,2\n" % i
    print(await send(client, sid, gen()))
    await state(db, sid)
    sid2 = await seg(client)
    print(await send(client, sid2, gen()))
    await state(db, sid2)
    print(await send(client, sid2, b"name,email\nn,E@x.com\n"))
    await state(db, sid2)
    print(await db.fetch(f"SELECT * FROM audience.members_{sid2}"))
    print(await db.fetch(f"SELECT * FROM pg_tables where schemaname in ('audience', 'staging')"))
