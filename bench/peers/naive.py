"""The naive peer: what a quick implementation of the push API does, as an anchor (not a product).

    python3 -m bench.peers.naive --database-url URL --port PORT

It reads the whole body into memory (``request.read()``), parses it with ``csv`` and writes with
``executemany`` in one transaction per request into its own table ``naive_members``: POST upserts
(``INSERT … ON CONFLICT DO UPDATE``), DELETE deletes, PUT deletes everything when it is batch 1 of its
push and then upserts. A REPLACE is therefore not atomic across batches: readers see a partial audience
between batch 1 and the last, and batch 1 must arrive first. The first column is the identity.
"""

import argparse
import csv
import io
from pathlib import Path

import asyncpg
from aiohttp import web

from gateway.db.queries import parse_queries

SQL = parse_queries((Path(__file__).parent.parent / "bench.sql").read_text())
POOL = web.AppKey("pool", asyncpg.Pool)


async def push(request: web.Request) -> web.Response:
    lines = list(csv.reader(io.StringIO((await request.read()).decode())))[1:]
    records = [(line[0].strip().lower(), line[1:]) for line in lines if line]
    async with request.app[POOL].acquire() as conn, conn.transaction():
        if request.method == "PUT" and request.query.get("currentBatchNumber", "1") == "1":
            await conn.execute(SQL["naive_clear"])
        if request.method == "DELETE":
            await conn.executemany(SQL["naive_delete"], [(identity,) for identity, _ in records])
        else:
            await conn.executemany(SQL["naive_upsert"], records)
    return web.json_response({"result": {"numReceived": str(len(records))}})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()

    async def pool(app: web.Application):
        app[POOL] = await asyncpg.create_pool(args.database_url, min_size=1, max_size=10)
        await app[POOL].execute(SQL["naive_create"])
        yield
        await app[POOL].close()

    app = web.Application(client_max_size=2**31)
    app.cleanup_ctx.append(pool)
    app.router.add_route("*", "/v1/segments/{segment_id}/data", push)
    web.run_app(app, host="127.0.0.1", port=args.port, print=print, access_log=None)


if __name__ == "__main__":
    main()
