"""Graceful drain: SIGTERM to the whole process group lets an in-flight upload finish, then exit 0; no request
starts after the drain began, not even on a connection kept alive from before."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import threading
import time

import aiohttp

from tests.acceptance.cli_process import GatewayProcess, free_data_dir
from tests.acceptance.test_cli import AUTH, KEY, postmaster_pid


async def test_sigterm_to_the_group_drains_an_upload_in_flight(tmp_path):
    env = {**free_data_dir(tmp_path), "GATEWAY_API_KEY": KEY, "GATEWAY_LOG_LEVEL": "INFO"}
    gateway = GatewayProcess("serve", "--port", "0", env=env)
    url = gateway.wait_listening()
    log_lines = collect_lines(gateway.process.stderr)
    postmaster = postmaster_pid(tmp_path / "data")
    assert postmaster is not None
    pgid = os.getpgid(gateway.process.pid)
    assert pgid != os.getpgid(0), "the gateway must run in its own process group"
    release = asyncio.Event()

    async def held_body():
        yield b"Email,Name\n" + b"".join(b"early%d@example.com,E\n" % i for i in range(5))
        await release.wait()  # the rest comes once the drain has begun
        yield b"".join(b"late%d@example.com,L\n" % i for i in range(5)) + b",no identity\n"

    async with aiohttp.ClientSession(headers=AUTH) as session:
        async with session.post(url + "/v1/segments", json={"name": "Drained"}) as response:
            segment = (await response.json())["result"]["segmentId"]
        upload = asyncio.create_task(session.post(f"{url}/v1/segments/{segment}/data", data=held_body(),
                                                  headers={"Content-Type": "text/csv", "X-Request-ID": "drain-1"}))
        await until(lambda: upload_in_flight(session, url), "the upload to be in flight")
        os.killpg(pgid, signal.SIGTERM)
        await until(lambda: asyncio.sleep(0, any(STOPPING in line for line in log_lines)), "the drain to begin")
        release.set()
        async with await upload as response:
            assert response.status == 200
            result = (await response.json())["result"]
    assert (result["numReceived"], result["numInvalid"], result["numAdded"]) == ("11", "1", "10")

    code = await asyncio.to_thread(gateway.process.wait, 60)
    assert code == 0, "".join(log_lines)
    gateway.stop()
    assert postmaster_pid(tmp_path / "data") is None, "the embedded PostgreSQL must be stopped"

    def logged(entry: dict) -> bool:
        return entry.get("request_id") == "drain-1" and entry.get("status") == 200

    await until(lambda: asyncio.sleep(0, any(logged(json.loads(line)) for line in log_lines if line.strip())),
                "the upload's access line")


MAX_BATCHES = 60  # the batches sent after SIGTERM, at most, before the test gives up waiting for the drain
STOPPING = "stopping: no new connections"  # logged in the same loop step as the drain begins


def collect_lines(stream) -> list[str]:
    """Read ``stream`` line by line in a thread (the pipe never fills); the list grows as lines come."""
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(stream), daemon=True).start()
    return lines


async def until(check, what: str, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while not (value := await check()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)
    return value


async def upload_in_flight(session: aiohttp.ClientSession, url: str) -> bool:
    async with session.get(url + "/metrics") as response:
        text = await response.text()
    return re.search(r"^audience_gateway_uploads_in_flight 1\.0$", text, re.MULTILINE) is not None


async def test_no_request_starts_on_a_kept_alive_connection_after_the_drain_began(tmp_path):
    """A held upload keeps the drain open. One keep-alive connection sends batch after batch while SIGTERM
    arrives: every batch that started after the drain began is refused (503 ``shutting_down`` with
    ``Connection: close`` and ``Retry-After``) or finds the connection closed; an idle kept-alive
    connection gets the same 503; the held upload still finishes. (Before: batches went on being served
    until the drain ended.)"""
    env = {**free_data_dir(tmp_path), "GATEWAY_API_KEY": KEY, "GATEWAY_LOG_LEVEL": "INFO"}
    gateway = GatewayProcess("serve", "--port", "0", env=env)
    url = gateway.wait_listening()
    log_lines = collect_lines(gateway.process.stderr)
    pgid = os.getpgid(gateway.process.pid)
    release = asyncio.Event()

    async def held_body():
        yield b"Email\nheld1@example.com\n"
        await release.wait()
        yield b"held2@example.com\n"

    def one_connection() -> aiohttp.ClientSession:
        return aiohttp.ClientSession(headers=AUTH, connector=aiohttp.TCPConnector(limit=1))

    async with one_connection() as setup, one_connection() as held_session, one_connection() as idle, \
            one_connection() as batches:
        async with setup.post(url + "/v1/segments", json={"name": "Drained"}) as response:
            segment = (await response.json())["result"]["segmentId"]
        data = f"{url}/v1/segments/{segment}/data"
        held = asyncio.create_task(held_session.post(data, data=held_body(), headers={"Content-Type": "text/csv"}))

        await until(lambda: upload_in_flight(setup, url), "the held upload to be in flight")
        async with idle.get(url + "/v1/segments") as response:
            assert response.status == 200  # this connection now waits, kept alive

        outcomes: dict[int, object] = {}
        for number in range(MAX_BATCHES + 3):
            if number == 3:
                os.killpg(pgid, signal.SIGTERM)
            try:
                async with batches.post(data, data=b"Email\nbatch%d@example.com\n" % number,
                                        headers={"Content-Type": "text/csv", "X-Request-ID": f"batch-{number}"}
                                        ) as response:
                    await response.read()
                    outcomes[number] = response.status
            except aiohttp.ClientConnectionError:
                outcomes[number] = "closed"
            if outcomes[number] != 200:
                break
        assert outcomes[number] != 200, f"{len(outcomes) - 3} batches sent after SIGTERM were all served"

        await until(lambda: asyncio.sleep(0, any(STOPPING in line for line in log_lines)), "the drain to begin")
        async with idle.get(url + "/v1/segments", headers={"X-Request-ID": "on-idle"}) as response:
            body = await response.json()
            assert response.status == 503, body
            assert body["responseStatus"] == "failure" and body["error"]["code"] == "shutting_down", body
            assert response.headers["Connection"].lower() == "close"
            assert int(response.headers["Retry-After"]) >= 1

        release.set()
        async with await held as response:
            assert response.status == 200
            assert (await response.json())["result"]["numAdded"] == "2"
            assert response.headers["Connection"].lower() == "close", "answered during the drain"

    assert await asyncio.to_thread(gateway.process.wait, 60) == 0
    gateway.stop()
    entries = [json.loads(line) for line in log_lines if line.strip()]
    drain_began = next(index for index, entry in enumerate(entries) if entry["message"] == STOPPING)
    served = {int(entry["request_id"].split("-")[1]): (index, entry["status"]) for index, entry in enumerate(entries)
              if str(entry.get("request_id")).startswith("batch-") and "status" in entry}
    # Batches go one at a time: the first whose access line follows the drain's start may have begun
    # before it; every later one began after it (it was sent once its predecessor had been answered).
    first_after = min((number for number, (index, _) in served.items() if index > drain_began), default=len(outcomes))
    started_after = {number: status for number, (_, status) in served.items() if number > first_after}
    assert [number for number, status in started_after.items() if status == 200] == [], started_after
    assert all(status == 503 for status in started_after.values())
    assert all(outcome in (503, "closed") for number, outcome in outcomes.items() if number > first_after)
