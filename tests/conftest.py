"""Shared fixtures: one PostgreSQL server per test run, one fresh database per test.

The server is the embedded one (fast settings: no fsync) unless ``GATEWAY_TEST_DATABASE_URL`` names
one. A template database is migrated once; each test gets ``CREATE DATABASE … TEMPLATE`` of it.
Tests marked ``pg15`` run a second time on a PostgreSQL 15 server started from Debian's binaries
when those are installed (skipped, with the reason, when they are not).
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import os
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
from aiohttp.test_utils import TestServer

from gateway import state
from gateway.app import create_app
from gateway.auth.keys import insert_key
from gateway.http.clients import runner_options
from gateway.db.embedded import EmbeddedPostgres
from gateway.db.migrations import apply_migrations
from gateway.settings import Settings
from gateway.db.queries import QUERIES

ADMIN_KEY = "test-admin-key-0123456789abcdef-0123456789"
AUTH = {"Authorization": f"Bearer {ADMIN_KEY}"}
PG15_BIN = Path("/usr/lib/postgresql/15/bin")
FAST_TEST_SETTINGS = {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}
REPO = Path(__file__).resolve().parent.parent
CSV_SPECTRUM = REPO / "tests" / "data" / "csv-spectrum"  # a copy of the corpus, with its licence
CSV_SPECTRUM_FILES = sorted((CSV_SPECTRUM / "csvs").glob("*.csv"))
_database_numbers = itertools.count()


class Cluster:
    """A PostgreSQL server we may create databases on, with a migrated template database."""

    def __init__(self, admin_url: str, label: str) -> None:
        self.admin_url = admin_url
        self.label = label
        self.template = f"gw_template_{uuid.uuid4().hex[:8]}"

    def url(self, database: str) -> str:
        parts = urlsplit(self.admin_url)
        return urlunsplit(parts._replace(path=f"/{database}"))

    async def prepare_template(self) -> None:
        conn = await asyncpg.connect(self.admin_url)
        try:
            await conn.execute(f'CREATE DATABASE "{self.template}"')
        finally:
            await conn.close()
        conn = await asyncpg.connect(self.url(self.template))
        try:
            await apply_migrations(conn)
        finally:
            await conn.close()

    async def create_database(self, *, migrated: bool = True) -> str:
        name = f"gw_test_{os.getpid()}_{next(_database_numbers)}"
        template = self.template if migrated else "template0"
        conn = await asyncpg.connect(self.admin_url)
        try:
            await conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}" STRATEGY FILE_COPY')
        finally:
            await conn.close()
        return name

    async def drop_database(self, name: str) -> None:
        conn = await asyncpg.connect(self.admin_url)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()


def _start_cluster(label: str, bin_dir: Path | None) -> Iterator[Cluster]:
    """A test server in a directory of its own, not under pytest's numbered temp folders: a second pytest
    run started meanwhile prunes old ones, and would delete this run's data directory under the server."""
    with tempfile.TemporaryDirectory(prefix=f"gateway-test-{label}-") as data_root:
        server = EmbeddedPostgres(Path(data_root), bin_dir=bin_dir, settings=FAST_TEST_SETTINGS)
        server.start()
        try:
            cluster = Cluster(server.dsn("postgres"), label)
            asyncio.run(cluster.prepare_template())
            yield cluster
        finally:
            server.stop()


@pytest.fixture(scope="session")
def main_cluster() -> Iterator[Cluster]:
    external = os.environ.get("GATEWAY_TEST_DATABASE_URL")
    if external:
        cluster = Cluster(external, "external")
        asyncio.run(cluster.prepare_template())
        yield cluster
        return
    yield from _start_cluster("pg-main", None)


@pytest.fixture(scope="session")
def pg15_cluster() -> Iterator[Cluster]:
    if not (PG15_BIN / "postgres").exists():
        pytest.skip(f"PostgreSQL 15 binaries not installed at {PG15_BIN}")
    yield from _start_cluster("pg15", PG15_BIN)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "cluster" in metafunc.fixturenames:
        labels = ["main", "pg15"] if metafunc.definition.get_closest_marker("pg15") else ["main"]
        metafunc.parametrize("cluster", labels, indirect=True)


@pytest.fixture
def cluster(request: pytest.FixtureRequest) -> Cluster:
    return request.getfixturevalue(f"{request.param}_cluster")


@pytest.fixture
async def database_url(cluster: Cluster) -> AsyncIterator[str]:
    name = await cluster.create_database()
    yield cluster.url(name)
    await cluster.drop_database(name)


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return Settings.load(environ={}, database_url=database_url, api_key=ADMIN_KEY, data_dir=tmp_path / "data")


class GatewayTestServer(TestServer):
    """aiohttp's test server with the runner options ``serve`` takes from the settings (gateway.http.clients)."""

    async def _make_runner(self, **kwargs):
        return await super()._make_runner(**{**runner_options(self.app[state.SETTINGS]), **kwargs})


@pytest.fixture
async def client(aiohttp_client, settings: Settings):
    return await aiohttp_client(GatewayTestServer(create_app(settings)))


@pytest.fixture
async def streaming_client(aiohttp_client, settings: Settings):
    """A client of an app whose ADD bodies all stream through ``incoming`` (``GATEWAY_ADD_READ_AHEAD_BYTES``
    0), as a body larger than the read-ahead does: for the races of a body still streaming."""
    return await aiohttp_client(GatewayTestServer(create_app(dataclasses.replace(settings, add_read_ahead_bytes=0))))


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    """A direct connection to the test's database, for set-up and for checking what was stored."""
    conn = await asyncpg.connect(database_url)
    yield conn
    await conn.close()


@pytest.fixture
def make_key(db: asyncpg.Connection):
    """``await make_key(scope, endpoint="default", **options)`` → the Authorization header of a new key."""

    async def make(scope: str, endpoint: str = "default", **options) -> dict[str, str]:
        await db.fetchval(QUERIES["endpoint_create"], endpoint)
        secret = f"test-{scope}-{uuid.uuid4().hex}"
        await insert_key(db, secret, endpoint=endpoint, scope=scope, **options)
        return {"Authorization": f"Bearer {secret}"}

    return make
