"""``audience-gateway top --once`` against a running gateway (the test server)."""

from __future__ import annotations

import asyncio
import sys

from tests.conftest import AUTH


async def run_top(*args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(sys.executable, "-m", "gateway", "top", *args,
                                                   stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(process.communicate(), 30)
    return process.returncode, out.decode(), err.decode()


async def test_top_once_shows_rates_and_totals(client):
    response = await client.post("/v1/segments", json={"name": "Top"}, headers=AUTH)
    segment = (await response.json())["result"]["segmentId"]
    await client.post(f"/v1/segments/{segment}/data", data=b"Email\na@example.com\n\n,x\n",
                      headers={**AUTH, "Content-Type": "text/csv"})
    url = str(client.make_url("")).rstrip("/")
    code, out, err = await run_top("--url", url, "--once", "--interval", "0.2")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].startswith(f"audience-gateway top  {url}")
    labels = [line.split()[0] for line in lines[1:] if line]
    assert labels == ["rows/s", "invalid/s", "MB/s", "in", "sessions", "jobs", "errors/s", "pool", "totals"]
    assert "\x1b" not in out, "plain lines when stdout is not a terminal"


async def test_top_exits_1_when_the_gateway_does_not_answer():
    code, out, err = await run_top("--url", "http://127.0.0.1:1", "--once")
    assert code == 1 and "audience-gateway:" in err
