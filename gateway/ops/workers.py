"""``serve --workers N``: N gateway processes on one port and one database, under one parent.

The parent starts the embedded PostgreSQL (if no URL is set), migrates, then re-executes
``python -m gateway serve --worker`` N times with the database URL and a fresh
``PROMETHEUS_MULTIPROC_DIR`` in their environment. Each worker binds the port with SO_REUSEPORT, so the
kernel spreads connections over them; each drains on its own when signalled. The parent forwards
SIGTERM/SIGINT, waits for the workers, then stops the database. Everything shared (REPLACE sessions,
jobs, keys) is in PostgreSQL already, so the workers behave as one gateway.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import socket
import sys
import tempfile
from pathlib import Path

import asyncpg
from prometheus_client import multiprocess

from gateway.auth.keys import ensure_bootstrap_key
from gateway.db.migrations import apply_migrations
from gateway.db.pool import attach_database, create_pool
from gateway.ops.metrics import MULTIPROC_DIR_ENV
from gateway.settings import Settings

log = logging.getLogger(__name__)

LISTENING_PREFIX = b"audience-gateway listening on "
EXIT_GRACE_SECONDS = 30  # beyond the drain: pool, job hand-back, cleanup


async def prepare_database(pool: asyncpg.Pool, api_key: str | None) -> str | None:
    """Apply missing migrations and make sure a key exists; returns a newly generated key (print it once)."""
    async with pool.acquire() as conn:
        await apply_migrations(conn)
        return await ensure_bootstrap_key(conn, api_key)

class WorkerFailed(RuntimeError):
    """A worker exited before it was listening."""


class Workers:
    """N ``serve --worker`` processes sharing one port (SO_REUSEPORT), one database and one metrics dir."""

    def __init__(self, count: int, host: str, port: int, settings: Settings) -> None:
        self.count = count
        self.host = host
        self.port = port
        self.settings = settings
        self.children: list[asyncio.subprocess.Process] = []
        self._database = contextlib.AsyncExitStack()  # the embedded server, if any, until close()
        self._metrics_dir = Path(tempfile.mkdtemp(prefix="audience-gateway-metrics-"))
        self._pipes: list[asyncio.Task] = []

    async def start(self) -> tuple[str | None, int]:
        """Database, migrations, then the workers; returns a newly generated key (or None) and the port."""
        url = await self._database.enter_async_context(attach_database(self.settings))
        async with await create_pool(url, max_size=1) as pool:
            generated = await prepare_database(pool, self.settings.api_key)
        with self._reserve_port() as port:
            env = {**os.environ, "GATEWAY_DATABASE_URL": url, MULTIPROC_DIR_ENV: str(self._metrics_dir)}
            argv = [sys.executable, "-m", "gateway", "serve", "--worker", "--host", self.host, "--port", str(port)]
            for _ in range(self.count):
                self.children.append(await asyncio.create_subprocess_exec(
                    *argv, env=env, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE))
            for child in self.children:
                await self._wait_listening(child)
        return generated, port

    async def run_until(self, stop: asyncio.Event) -> int:
        """Until a signal (forwarded to the workers) or a worker's death; 0 if every worker exited 0."""
        stopping = asyncio.create_task(stop.wait())
        exits = [asyncio.create_task(child.wait()) for child in self.children]
        await asyncio.wait([stopping, *exits], return_when=asyncio.FIRST_COMPLETED)
        if not stopping.done():
            log.error("a worker exited unexpectedly: stopping the others")
        stopping.cancel()
        self._signal_all(signal.SIGTERM)
        done, _ = await asyncio.wait(exits, timeout=self.settings.shutdown_timeout + EXIT_GRACE_SECONDS)
        if len(done) < len(exits):
            log.error("workers still running after the shutdown timeout: killing them")
            self._signal_all(signal.SIGKILL)
            await asyncio.wait(exits)
        ok = stop.is_set() and all(child.returncode == 0 for child in self.children)
        return 0 if ok else 1

    async def close(self) -> None:
        """Whatever happened: no worker left, the database stopped, the metrics files removed."""
        self._signal_all(signal.SIGKILL)
        for child in self.children:
            await child.wait()
            multiprocess.mark_process_dead(child.pid, str(self._metrics_dir))
        for task in self._pipes:
            task.cancel()
        await asyncio.gather(*self._pipes, return_exceptions=True)
        shutil.rmtree(self._metrics_dir, ignore_errors=True)
        await self._database.aclose()

    @contextlib.contextmanager
    def _reserve_port(self):
        """Port 0: pick a free port with a bound (not listening) SO_REUSEPORT socket the workers join."""
        if self.port != 0:
            yield self.port
            return
        with socket.socket(socket.AF_INET6 if ":" in self.host else socket.AF_INET) as reserved:
            reserved.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            reserved.bind((self.host, 0))
            yield reserved.getsockname()[1]

    async def _wait_listening(self, child: asyncio.subprocess.Process) -> None:
        assert child.stdout is not None
        while line := await child.stdout.readline():
            if line.startswith(LISTENING_PREFIX):
                self._pipes.append(asyncio.create_task(_discard(child.stdout)))
                return
        raise WorkerFailed(f"a worker exited before listening (exit code {await child.wait()})")

    def _signal_all(self, sig: int) -> None:
        for child in self.children:
            if child.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    child.send_signal(sig)


async def _discard(stream: asyncio.StreamReader) -> None:
    """Keep reading a worker's stdout so that it never blocks on a full pipe."""
    while await stream.read(65536):
        pass
