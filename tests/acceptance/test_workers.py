"""``serve --workers 2``: two processes on one port whose metrics add up."""

from __future__ import annotations

import asyncio
import json

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from tests.acceptance.cli_process import GatewayProcess, free_data_dir
from tests.acceptance.test_cli import AUTH, KEY, postmaster_pid

PUSHES = 24


async def rows_received(url: str) -> float:
    async with aiohttp.ClientSession() as session:  # a new connection: any worker may answer
        async with session.get(url + "/metrics") as response:
            assert response.status == 200
            text = await response.text()
    return sum(sample.value for family in text_string_to_metric_families(text) for sample in family.samples
               if sample.name == "audience_gateway_rows_received_total" and sample.labels["method"] == "POST")


async def test_two_workers_share_the_port_and_their_metrics_add_up(tmp_path):
    env = {**free_data_dir(tmp_path), "GATEWAY_API_KEY": KEY, "GATEWAY_LOG_LEVEL": "INFO"}
    gateway = GatewayProcess("serve", "--workers", "2", "--port", "0", env=env)
    url = gateway.wait_listening()
    async with aiohttp.ClientSession(headers=AUTH) as session:
        async with session.post(url + "/v1/segments", json={"name": "Shared"}) as response:
            segment = (await response.json())["result"]["segmentId"]

    async def push(number: int) -> None:
        body = f"Email\nw{number}a@example.com\nw{number}b@example.com\n".encode()
        async with aiohttp.ClientSession(headers=AUTH) as session:  # one connection per push
            async with session.post(f"{url}/v1/segments/{segment}/data", data=body,
                                    headers={"Content-Type": "text/csv"}) as response:
                assert response.status == 200

    await asyncio.gather(*(push(number) for number in range(PUSHES)))
    assert [await rows_received(url) for _ in range(6)] == [2 * PUSHES] * 6

    gateway.process.terminate()
    stderr = await asyncio.to_thread(gateway.process.stderr.read)
    assert gateway.stop() == 0, stderr
    assert postmaster_pid(tmp_path / "data") is None
    pids = {entry["pid"] for entry in map(json.loads, stderr.splitlines())
            if entry.get("logger") == "gateway.access" and entry.get("route") == "/v1/segments/{segment_id}/data"}
    assert len(pids) == 2, "both workers must have served pushes"
