"""The embedded server is shared by every process on a data dir and stopped by the last one to leave."""

import subprocess

from gateway.embedded import EmbeddedPostgres


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
