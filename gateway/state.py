"""Every piece of application state, as typed aiohttp keys (one place to see what the app holds)."""

from __future__ import annotations

import asyncpg
from aiohttp import web

from gateway.auth import Principal
from gateway.clients import DataSlots
from gateway.drain import InFlight
from gateway.embedded import EmbeddedPostgres
from gateway.keycache import KeyCache
from gateway.logs import RequestStats
from gateway.settings import Settings
from gateway.throttle import FailureThrottle

SETTINGS = web.AppKey("settings", Settings)
POOL = web.AppKey("pool", asyncpg.Pool)  # the main pool: data, jobs, sweeps, management writes
CONTROL_POOL = web.AppKey("control_pool", asyncpg.Pool)  # short control queries only (gateway.clients)
DATA_SLOTS = web.AppKey("data_slots", DataSlots)  # uploads and downloads holding a main-pool connection
DATABASE_URL = web.AppKey("database_url", str)  # for dedicated connections (LISTEN), beside the pool
EMBEDDED = web.AppKey("embedded", EmbeddedPostgres)
GENERATED_KEY = web.AppKey("generated_key", str)  # set when start-up created the first key
KEYS = web.AppKey("keys", KeyCache)
AUTH_THROTTLE = web.AppKey("auth_throttle", FailureThrottle)
IN_FLIGHT = web.AppKey("in_flight", InFlight)  # requests being handled, for the drain at shutdown

PRINCIPAL = web.RequestKey("principal", Principal)
REQUEST_ID = web.RequestKey("request_id", str)
STATS = web.RequestKey("stats", RequestStats)  # what the handler moved, for the access log line
ANSWER = web.RequestKey("answer", web.StreamResponse)  # set once the answer's status line has been sent
