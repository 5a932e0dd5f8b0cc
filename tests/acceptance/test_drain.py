"""Graceful drain: SIGTERM to the whole process group lets an in-flight upload finish, then exit 0."""

from __future__ import annotations

import asyncio
import json
import os
import signal

import aiohttp

from tests.acceptance.cli_process import GatewayProcess, free_data_dir
from tests.acceptance.test_cli import AUTH, KEY, postmaster_pid


async def test_sigterm_to_the_group_drains_an_upload_in_flight(tmp_path):
    env = {**free_data_dir(tmp_path), "GATEWAY_API_KEY": KEY, "GATEWAY_LOG_LEVEL": "INFO"}
    gateway = GatewayProcess("serve", "--port", "0", env=env)
    url = gateway.wait_listening()
    postmaster = postmaster_pid(tmp_path / "data")
    assert postmaster is not None
    pgid = os.getpgid(gateway.process.pid)
    assert pgid != os.getpgid(0), "the gateway must run in its own process group"

    async def slow_body():
        yield b"Email,Name\n" + b"".join(b"early%d@example.com,E\n" % i for i in range(5))
        await asyncio.sleep(0.3)  # the request is being handled
        os.killpg(pgid, signal.SIGTERM)
        await asyncio.sleep(1)
        yield b"".join(b"late%d@example.com,L\n" % i for i in range(5)) + b",no identity\n"

    async with aiohttp.ClientSession(headers=AUTH) as session:
        async with session.post(url + "/v1/segments", json={"name": "Drained"}) as response:
            segment = (await response.json())["result"]["segmentId"]
        async with session.post(f"{url}/v1/segments/{segment}/data", data=slow_body(),
                                headers={"Content-Type": "text/csv", "X-Request-ID": "drain-1"}) as response:
            assert response.status == 200
            result = (await response.json())["result"]
    assert (result["numReceived"], result["numInvalid"], result["numAdded"]) == ("11", "1", "10")

    code = await asyncio.to_thread(gateway.process.wait, 60)
    stderr = gateway.process.stderr.read()
    assert code == 0, stderr
    gateway.stop()
    assert postmaster_pid(tmp_path / "data") is None, "the embedded PostgreSQL must be stopped"
    entries = [json.loads(line) for line in stderr.splitlines() if line.strip()]
    assert any(entry.get("request_id") == "drain-1" and entry.get("status") == 200 for entry in entries)
