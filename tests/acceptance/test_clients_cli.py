"""The real ``push`` and ``pull`` commands against a real ``serve``: a gzip file with quoted newlines
pushed as a REPLACE in batches and pulled back through an export job; exit codes 1, 2 and 3."""

import csv
import gzip
import io
import os
import signal
import socket
import subprocess
import sys

import pytest

from tests.acceptance.cli_process import GatewayProcess
from tests.conftest import REPO

README = (REPO / "README.md").read_text()

KEY = "acceptance-key-0123456789abcdef-0123456789"


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gateway", *args], env=os.environ.copy(), capture_output=True,
                          text=True, timeout=120)


@pytest.fixture
async def served(cluster):
    name = await cluster.create_database(migrated=False)
    env = {"GATEWAY_DATABASE_URL": cluster.url(name), "GATEWAY_API_KEY": KEY, "GATEWAY_LOG_LEVEL": "WARNING",
           "GATEWAY_SYNC_EXPORT_MAX_ROWS": "10"}
    gateway = GatewayProcess("serve", "--port", "0", env=env)
    try:
        yield gateway.wait_listening()
    finally:
        assert gateway.stop() == 0
        await cluster.drop_database(name)


async def test_push_then_pull_round_trip(served, tmp_path):
    rows = [[f"u{i}@x.com", f"Name {i}", f"first\nsecond, {i}" if i % 7 == 0 else "plain"] for i in range(2500)]
    text = io.StringIO()
    csv.writer(text, lineterminator="\n").writerows([["Email", "Name", "Note"], *rows])
    path = tmp_path / "people.csv.gz"
    path.write_bytes(gzip.compress(text.getvalue().encode()))

    pushed = run_cli("push", str(path), "--url", served, "--key", KEY, "--create", "Acceptance", "--mode",
                     "replace", "--batch-rows", "1000", "--concurrency", "2")
    assert pushed.returncode == 0, pushed.stderr
    assert "in 3 batch(es): 2,500 rows" in pushed.stdout
    assert "REPLACE committed, audience size 2500" in pushed.stdout
    segment_id = pushed.stdout.split()[1].rstrip(":")

    output = tmp_path / "pulled.csv"
    pulled = run_cli("pull", "--url", served, "--key", KEY, "--segment", segment_id, "-o", str(output))
    assert pulled.returncode == 0, pulled.stderr
    assert "by export job" in pulled.stdout
    header, *back = csv.reader(io.StringIO(output.read_text(encoding="utf-8"), newline=""))
    assert header == ["Email", "Name", "Note"]
    assert sorted(back) == sorted(rows)

    bad = tmp_path / "bad.csv"
    bad.write_text("Email,Name\na@x.com\n")
    strict = run_cli("push", str(bad), "--url", served, "--key", KEY, "--segment", segment_id, "--strict")
    assert strict.returncode == 1, strict.stderr
    assert "line 2: expected 2 fields, got 1" in strict.stderr


def test_usage_and_unreachable_server_exit_codes(tmp_path, unused_tcp_port):
    path = tmp_path / "people.csv"
    path.write_text("Email\na@x.com\n")
    usage = run_cli("push", str(path), "--url", "http://127.0.0.1:1", "--key", KEY)  # no --segment/--create
    assert usage.returncode == 2 and "--segment" in usage.stderr
    unreachable = run_cli("push", str(path), "--url", f"http://127.0.0.1:{unused_tcp_port}", "--key", KEY,
                          "--segment", "1", "--retries", "2")
    assert unreachable.returncode == 3
    assert "gave up after 2 attempts" in unreachable.stderr
    missing = run_cli("pull", "--url", f"http://127.0.0.1:{unused_tcp_port}", "--key", KEY, "--segment", "1")
    assert missing.returncode == 2 and "--output" in missing.stderr


def test_ctrl_c_exits_130(tmp_path):
    path = tmp_path / "people.csv"
    path.write_text("Email\na@x.com\n")
    with socket.socket() as silent:  # accepts connections, never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        process = subprocess.Popen([sys.executable, "-m", "gateway", "push", str(path), "--url",
                                    f"http://127.0.0.1:{silent.getsockname()[1]}", "--key", KEY, "--segment", "1"],
                                   stderr=subprocess.PIPE, text=True)
        assert process.stderr is not None
        silent.settimeout(30)
        connection, _ = silent.accept()
        connection.settimeout(30)
        assert connection.recv(4) == b"GET "  # the segment check, before the file is read: it waits for the answer
        process.send_signal(signal.SIGINT)
        assert process.wait(30) == 130
        assert "interrupted" in process.stderr.read()
        process.stderr.close()
        connection.close()


async def test_the_readmes_first_steps(served, tmp_path):
    """README "First steps": push examples/people.csv, pull it back, fetch its rejects with the command push
    printed; the figures the README shows are the ones the commands give."""
    example = REPO / "examples" / "people.csv"
    pushed = run_cli("push", str(example), "--url", served, "--key", KEY, "--create", "People", "--mode", "replace")
    assert pushed.returncode == 0, pushed.stderr
    for shown in ("received 10, invalid 2, added 8; REPLACE committed, audience size 8",
                  "line 5: expected 4 fields, got 3", "line 9: empty identity (Email)"):
        assert shown in pushed.stdout and shown in README
    segment_id = pushed.stdout.split()[1].rstrip(":")

    output = tmp_path / "people-back.csv"
    pulled = run_cli("pull", "--url", served, "--key", KEY, "--segment", segment_id, "-o", str(output))
    assert pulled.returncode == 0, pulled.stderr
    header, *members = csv.reader(io.StringIO(output.read_text(encoding="utf-8"), newline=""))
    assert header == ["Email", "FirstName", "LastName", "Country"] and len(members) == 8
    assert ["ivy@example.com", "Ivy", "Irwin", "IE"] in members

    printed = pushed.stdout.strip().splitlines()[-1]
    assert printed.startswith("every rejected row (CSV line,reason,raw,upload): curl ")
    command = printed.split(": ", 1)[1]
    fetched = subprocess.run(["bash", "-c", command], env={**os.environ, "KEY": KEY}, capture_output=True,
                             text=True, timeout=60)
    rows = list(csv.reader(io.StringIO(fetched.stdout, newline="")))
    assert rows[0] == ["line", "reason", "raw", "upload"]
    assert [row[:3] for row in rows[1:]] == [["5", "expected 4 fields, got 3", "dan@example.com,Dan,Dunn"],
                                              ["9", "empty identity (Email)", '"",Gus,Gray,DE']]
