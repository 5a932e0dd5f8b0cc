"""The embedded server is shared by every process on a data dir and stopped by the last one to leave."""

import asyncio
import os
import stat
import subprocess
import tempfile
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import asyncpg
import pytest

from gateway.db.embedded import PORT, EmbeddedPostgres, EmbeddedPostgresError


def running(server: EmbeddedPostgres) -> bool:
    return subprocess.run([str(server.bin_dir / "pg_ctl"), "-D", str(server.pgdata), "status"],
                          capture_output=True, user=server._run_as).returncode == 0


def test_the_last_user_stops_the_server(tmp_path):
    first = EmbeddedPostgres(tmp_path / "data")
    second = EmbeddedPostgres(tmp_path / "data")  # its own lock descriptor: a separate user, like a process
    assert first.start() == second.start()
    first.stop()  # e.g. a CLI command that started the server ends while `serve` still uses it
    assert running(second)
    second.stop()
    assert not running(second)
    second.stop()  # leaving twice is harmless


def test_a_user_joining_after_the_last_left_starts_it_again(tmp_path):
    server = EmbeddedPostgres(tmp_path / "data")
    server.start()
    server.stop()
    again = EmbeddedPostgres(tmp_path / "data")
    again.start()
    try:
        assert running(again)
    finally:
        again.stop()


def socket_dir(server: EmbeddedPostgres) -> str:
    return parse_qs(urlsplit(server.dsn()).query)["host"][0]


async def connect_without_password(server: EmbeddedPostgres) -> None:
    conn = await asyncpg.connect(host=socket_dir(server), port=PORT, user="postgres", database="postgres",
                                 password="", passfile=os.devnull)
    await conn.close()


async def assert_only_the_password_opens(server: EmbeddedPostgres, dsn: str) -> None:
    """Refused without the password, open with the DSN; the password file 0600, the socket's directory 0700."""
    with pytest.raises(asyncpg.InvalidPasswordError):
        await connect_without_password(server)
    conn = await asyncpg.connect(dsn)
    assert await conn.fetchval("SELECT current_user") == "postgres"
    await conn.close()
    assert stat.S_IMODE(server.password_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(os.stat(socket_dir(server)).st_mode) == 0o700


async def test_only_the_password_opens_the_server(tmp_path):
    """No local account gets in without the password: its file is 0600, the socket's directory 0700."""
    server = EmbeddedPostgres(tmp_path / "data")
    dsn = await asyncio.to_thread(server.start)
    try:
        await assert_only_the_password_opens(server, dsn)
    finally:
        await asyncio.to_thread(server.stop)


async def test_a_data_dir_of_an_earlier_version_that_trusted_everyone_is_upgraded(tmp_path):
    """Earlier versions ran initdb --auth=trust and kept no password: the next start sets one."""
    server = EmbeddedPostgres(tmp_path / "data")
    conn = await asyncpg.connect(await asyncio.to_thread(server.start))
    await conn.execute("ALTER ROLE postgres PASSWORD NULL")
    await conn.close()
    await asyncio.to_thread(server.stop)
    (server.pgdata / "pg_hba.conf").write_text("local all all trust\n")  # in place: its owner is kept
    server.password_file.unlink()
    os.chmod(tmp_path / "data" / "run", 0o755)
    upgraded = EmbeddedPostgres(tmp_path / "data")
    dsn = await asyncio.to_thread(upgraded.start)
    try:
        await assert_only_the_password_opens(upgraded, dsn)
    finally:
        await asyncio.to_thread(upgraded.stop)


@pytest.mark.skipif(os.geteuid() != 0, reason="making a directory another user owns needs root")
def test_a_socket_directory_someone_else_made_first_is_refused(tmp_path):
    """A data dir path too long for a socket puts it in /tmp, where another account could have made the
    directory first to reach the socket: such a directory is refused, not used."""
    server = EmbeddedPostgres(tmp_path / ("d" * 100))
    squatted = server._socket_dir()
    assert squatted.parent == Path(tempfile.gettempdir())
    squatted.mkdir(mode=0o777)
    try:
        os.chown(squatted, 65534, 65534)  # nobody
        with pytest.raises(EmbeddedPostgresError, match="not a directory of ours"):
            server.start()
        assert not running(server)
    finally:
        squatted.rmdir()
