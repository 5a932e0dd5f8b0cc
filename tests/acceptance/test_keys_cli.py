"""``endpoints`` and ``keys`` commands end to end: beside a running ``serve``, with nothing running, and
against an external database (flag and environment variable)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time

import aiohttp
import pytest

from gateway.db.pool import redact
from tests.acceptance.cli_process import GatewayProcess, free_data_dir
from tests.acceptance.test_cli import postmaster_pid, run_cli

ADMIN = "acceptance-admin-key-0123456789abcdef"


async def cli(*args: str, env: dict[str, str]):
    return await asyncio.to_thread(run_cli, *args, env=env)


async def get_status(url: str, secret: str, method: str = "GET", **kwargs) -> int:
    async with aiohttp.ClientSession() as session:
        async with session.request(method, url + "/v1/segments", headers={"Authorization": f"Bearer {secret}"},
                                   **kwargs) as response:
            return response.status


def secret_of(result) -> str:
    assert result.returncode == 0, result.stderr
    secret = result.stdout.split()[-1]
    assert secret.startswith("agw_") and len(secret) >= 4 + 43
    return secret


def key_lines(result) -> list[list[str]]:
    assert result.returncode == 0, result.stderr
    return [line.split("\t") for line in result.stdout.splitlines()]


async def test_manage_keys_while_serve_runs_on_the_embedded_database(tmp_path):
    env = {**free_data_dir(tmp_path), "GATEWAY_API_KEY": ADMIN}
    server = GatewayProcess("serve", "--port", "0", env=env)
    url = server.wait_listening()
    try:
        created = await cli("endpoints", "create", "acme", env=env)
        assert created.returncode == 0, created.stderr
        again = await cli("endpoints", "create", "acme", env=env)
        assert again.returncode == 1 and "exists already" in again.stderr
        listing = await cli("endpoints", "list", env=env)
        assert [line.split("\t")[1] for line in listing.stdout.splitlines()] == ["default", "acme"]

        secret = secret_of(await cli("keys", "create", "--endpoint", "acme", "--scope", "write",
                                     "--label", "from the test", "--expires-days", "30", env=env))
        assert await get_status(url, secret, "POST", json={"name": "Acme's"}) == 200
        assert await get_status(url, ADMIN) == 200

        listed = await cli("keys", "list", "--endpoint", "acme", env=env)
        assert secret not in listed.stdout and secret[4:20] not in listed.stdout
        [row] = key_lines(listed)
        key_id, endpoint, scope, label, created_at, last_used, expires, status = row
        assert key_id.isdigit() and (endpoint, scope, label, status) == ("acme", "write", "from the test", "active")
        assert created_at.endswith("Z") and expires.endswith("Z") and last_used == "-"
        assert len(key_lines(await cli("keys", "list", env=env))) == 2  # with the admin key of `default`

        revoked = await cli("keys", "revoke", key_id, env=env)
        assert revoked.returncode == 0, revoked.stderr
        started = time.monotonic()
        while await get_status(url, secret) != 401:  # another process revoked it: NOTIFY reached serve
            assert time.monotonic() - started < 1.0
            await asyncio.sleep(0.02)
        assert key_lines(await cli("keys", "list", "--endpoint", "acme", env=env))[0][7].startswith("revoked ")

        unknown_key = await cli("keys", "revoke", "987654", env=env)
        assert unknown_key.returncode == 1 and "no key with id 987654" in unknown_key.stderr
        unknown_endpoint = await cli("keys", "create", "--endpoint", "nowhere", "--scope", "read", env=env)
        assert unknown_endpoint.returncode == 1 and "no endpoint named 'nowhere'" in unknown_endpoint.stderr
        assert (await cli("keys", "list", "--endpoint", "nowhere", env=env)).returncode == 1
        assert (await cli("keys", "create", "--endpoint", "acme", "--scope", "root", env=env)).returncode == 2
        assert (await cli("keys", "revoke", "seven", env=env)).returncode == 2
        assert await get_status(url, ADMIN) == 200, "the commands must leave serve's database running"
    finally:
        assert server.stop() == 0


async def test_manage_keys_with_nothing_running(tmp_path):
    env = free_data_dir(tmp_path)
    created = await cli("keys", "create", "--endpoint", "default", "--scope", "read", "--init", env=env)
    secret = secret_of(created)
    assert f"data dir {tmp_path / 'data'}" in created.stderr
    assert postmaster_pid(tmp_path / "data") is None, "a command stops the embedded server it started"
    [row] = key_lines(await cli("keys", "list", env=env))  # no --init needed now
    assert row[1:3] == ["default", "read"] and secret not in "\t".join(row)

    server = GatewayProcess("serve", "--port", "0", env=env)
    url = server.wait_listening()
    try:
        assert not [line for line in server.lines if "shown only once" in line], "a key exists already"
        assert await get_status(url, secret) == 200
        assert await get_status(url, secret, "POST", json={"name": "x"}) == 403
    finally:
        assert server.stop() == 0


@pytest.mark.parametrize("command", [["endpoints", "list"], ["endpoints", "create", "acme"], ["keys", "list"],
                                     ["keys", "create", "--endpoint", "default", "--scope", "read"],
                                     ["keys", "revoke", "1"], ["segments", "export"]])
def test_admin_commands_refuse_a_data_dir_without_a_database(tmp_path, command):
    """Run from another directory, the default ./.gateway holds no database: say so, create none."""
    environ = {name: value for name, value in os.environ.items()
               if name not in ("GATEWAY_DATA_DIR", "GATEWAY_DATABASE_URL")}
    result = subprocess.run([sys.executable, "-m", "gateway", *command], cwd=tmp_path, env=environ,
                            capture_output=True, text=True, timeout=60)
    assert (result.returncode, result.stdout) == (2, ""), result.stderr
    assert f"no database in {tmp_path / '.gateway'}" in result.stderr
    assert "GATEWAY_DATA_DIR" in result.stderr and "--init" in result.stderr
    assert not (tmp_path / ".gateway").exists(), "nothing may be created without --init"


async def test_manage_keys_on_an_external_database(cluster):
    name = await cluster.create_database()
    database_url = cluster.url(name)
    try:
        created = await cli("endpoints", "create", "ext", "--database-url", database_url, env={})
        assert created.returncode == 0, created.stderr
        assert f"database {redact(database_url)}" in created.stderr and "data dir" not in created.stderr
        assert "@" not in database_url or database_url not in created.stderr  # never the password
        by_env = {"GATEWAY_DATABASE_URL": database_url}
        secret = secret_of(await cli("keys", "create", "--endpoint", "ext", "--scope", "admin", env=by_env))
        [row] = key_lines(await cli("keys", "list", "--endpoint", "ext", env=by_env))
        assert row[1:3] == ["ext", "admin"] and secret not in "\t".join(row)

        server = GatewayProcess("serve", "--port", "0", env={**by_env, "GATEWAY_LOG_LEVEL": "WARNING"})
        url = server.wait_listening()
        try:
            assert await get_status(url, secret) == 200
            revoked = await cli("keys", "revoke", row[0], "--database-url", database_url, env={})
            assert revoked.returncode == 0, revoked.stderr
            started = time.monotonic()
            while await get_status(url, secret) != 401:
                assert time.monotonic() - started < 1.0
                await asyncio.sleep(0.02)
        finally:
            assert server.stop() == 0
    finally:
        await cluster.drop_database(name)
