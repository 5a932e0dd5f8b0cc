"""Every piece of application state, as typed aiohttp keys (one place to see what the app holds)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:  # the keys are names; the types are for the type checker, so every layer may import this
    import asyncpg

    from gateway.audience.segment_lists import SegmentLists
    from gateway.auth.cache import KeyCache
    from gateway.auth.keys import Principal
    from gateway.auth.throttle import FailureThrottle
    from gateway.http.clients import DataSlots
    from gateway.http.drain import InFlight
    from gateway.ops.logs import RequestStats
    from gateway.settings import Settings

SETTINGS: web.AppKey[Settings] = web.AppKey("settings")
POOL: web.AppKey[asyncpg.Pool] = web.AppKey("pool")  # the main pool: data, jobs, sweeps, management writes
CONTROL_POOL: web.AppKey[asyncpg.Pool] = web.AppKey("control_pool")  # short control queries (gateway.http.clients)
DATA_SLOTS: web.AppKey[DataSlots] = web.AppKey("data_slots")  # uploads and downloads holding a main-pool connection
DATABASE_URL: web.AppKey[str] = web.AppKey("database_url")  # for dedicated connections (LISTEN), beside the pool
GENERATED_KEY: web.AppKey[str] = web.AppKey("generated_key")  # set when start-up created the first key
KEYS: web.AppKey[KeyCache] = web.AppKey("keys")
SEGMENT_LISTS: web.AppKey[SegmentLists] = web.AppKey("segment_lists")  # gateway.audience.segment_lists
AUTH_THROTTLE: web.AppKey[FailureThrottle] = web.AppKey("auth_throttle")
IN_FLIGHT: web.AppKey[InFlight] = web.AppKey("in_flight")  # requests being handled, for the drain at shutdown

PRINCIPAL: web.RequestKey[Principal] = web.RequestKey("principal")
REQUEST_ID: web.RequestKey[str] = web.RequestKey("request_id")
STATS: web.RequestKey[RequestStats] = web.RequestKey("stats")  # what the handler moved, for the access log line
ANSWER: web.RequestKey[web.StreamResponse] = web.RequestKey("answer")  # set once the answer's status line has been sent
