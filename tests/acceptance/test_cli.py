"""The real command line: start-up on the embedded database, restarts, kill -9, exit codes."""

import signal
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import pytest

from tests.acceptance.cli_process import GatewayProcess, free_data_dir

KEY = "acceptance-key-0123456789abcdef-0123456789"
AUTH = {"Authorization": f"Bearer {KEY}"}


def postmaster_pid(data_dir: Path) -> int | None:
    pidfile = data_dir / "pg" / "postmaster.pid"
    return int(pidfile.read_text().split()[0]) if pidfile.exists() else None


def process_alive(pid: int) -> bool:
    try:
        import os
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def call(url: str, method: str = "GET", path: str = "/v1/segments", **kwargs):
    async with aiohttp.ClientSession() as session:
        async with session.request(method, url + path, headers=AUTH, **kwargs) as response:
            return response.status, await response.json()


async def test_embedded_database_survives_restart_and_kill_9(tmp_path):
    env = {**free_data_dir(tmp_path), "GATEWAY_API_KEY": KEY}
    data_dir = tmp_path / "data"

    first = GatewayProcess("serve", "--port", "0", env=env)
    url = first.wait_listening()
    status, body = await call(url, "POST", json={"name": "Kept"})
    assert status == 200
    assert first.stop() == 0
    assert postmaster_pid(data_dir) is None, "the embedded server must stop with the gateway"

    second = GatewayProcess("serve", "--port", "0", env=env)
    url = second.wait_listening()
    status, listing = await call(url)
    assert [segment["name"] for segment in listing["result"]["list"]] == ["Kept"]
    left_running = postmaster_pid(data_dir)
    assert second.stop(signal.SIGKILL) == -signal.SIGKILL
    assert left_running is not None and process_alive(left_running)

    third = GatewayProcess("serve", "--port", "0", env=env)
    url = third.wait_listening()
    status, listing = await call(url)
    assert status == 200 and listing["result"]["totalCount"] == 1
    assert third.stop() == 0
    deadline = time.monotonic() + 10
    while process_alive(left_running) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not process_alive(left_running), "the adopted server must be stopped at exit"


async def test_first_start_prints_a_key_once(tmp_path):
    env = free_data_dir(tmp_path)
    first = GatewayProcess("serve", "--port", "0", env=env)
    first.wait_listening()
    printed = [line for line in first.lines if "shown only once" in line]
    assert len(printed) == 1
    key = printed[0].split()[-1]
    assert first.stop() == 0
    second = GatewayProcess("serve", "--port", "0", env=env)
    url = second.wait_listening()
    assert not [line for line in second.lines if "shown only once" in line]
    async with aiohttp.ClientSession() as session:
        async with session.get(url + "/v1/segments", headers={"Authorization": f"Bearer {key}"}) as response:
            assert response.status == 200
    assert second.stop() == 0


async def test_two_processes_on_one_database_both_become_ready(cluster):
    name = await cluster.create_database(migrated=False)
    try:
        env = {"GATEWAY_DATABASE_URL": cluster.url(name), "GATEWAY_API_KEY": KEY, "GATEWAY_LOG_LEVEL": "WARNING"}
        processes = [GatewayProcess("serve", "--port", "0", env=env) for _ in range(2)]
        urls = [process.wait_listening() for process in processes]
        for url in urls:
            async with aiohttp.ClientSession() as session:
                async with session.get(url + "/readyz") as response:
                    assert response.status == 200
        assert all(process.stop() == 0 for process in processes)
    finally:
        await cluster.drop_database(name)


def run_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    import os
    return subprocess.run([sys.executable, "-m", "gateway", *args], env={**os.environ, **env},
                          capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("variable, value", [
    ("GATEWAY_MAX_BODY_BYTES", "lots"),
    ("GATEWAY_REPLACE_SESSION_TTL", "soon"),
    ("GATEWAY_LOG_LEVEL", "LOUD"),
    ("GATEWAY_SYNC_EXPORT_MAX_ROWS", "-3"),
])
def test_bad_setting_exits_2_naming_the_variable(tmp_path, variable, value):
    result = run_cli("serve", env={**free_data_dir(tmp_path), variable: value})
    assert result.returncode == 2
    assert variable in result.stderr


def test_a_short_gateway_api_key_exits_2_saying_why(tmp_path):
    """A bootstrap key shorter than 32 characters is refused before anything starts, and not repeated."""
    short = "guessable-admin-key-31-characte"
    assert len(short) == 31
    result = run_cli("serve", "--port", "0", env={**free_data_dir(tmp_path), "GATEWAY_API_KEY": short})
    assert result.returncode == 2
    assert "GATEWAY_API_KEY" in result.stderr and "at least 32" in result.stderr
    assert short not in result.stderr + result.stdout
    assert not (tmp_path / "data").exists()


def test_unreachable_database_exits_2_with_one_line(tmp_path):
    result = run_cli("serve", "--database-url", "postgresql://u:pw@127.0.0.1:1/x", env=free_data_dir(tmp_path))
    assert result.returncode == 2
    message = [line for line in result.stderr.splitlines() if line.startswith("audience-gateway:")]
    assert len(message) == 1 and "cannot reach PostgreSQL" in message[0] and "pw" not in message[0]


def test_migrate_twice_changes_nothing(cluster):
    import asyncio
    name = asyncio.run(cluster.create_database(migrated=False))
    try:
        url = cluster.url(name)
        first = run_cli("migrate", "--database-url", url, env={})
        assert first.returncode == 0 and "0001_init" in first.stdout
        second = run_cli("migrate", "--database-url", url, env={})
        assert second.returncode == 0 and "applied 0 migration(s)" in second.stdout
    finally:
        asyncio.run(cluster.drop_database(name))
