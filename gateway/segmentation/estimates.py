"""Estimates: how many profiles a preview's expression selects, exact when that is affordable.

First an exact count over the profiles under a statement timeout of ``GATEWAY_ESTIMATE_EXACT_MS`` (skipped
when it is 0); if it does not finish in time, a sample of about ``GATEWAY_ESTIMATE_SAMPLE_ROWS`` source rows
(``TABLESAMPLE SYSTEM``: whole pages, read in a fraction of the time a full pass takes) in the same
snapshot. A sample whose fraction would be 100 % is the exact count, whatever the budget.

The sample's arithmetic (f: the sampling fraction; a page of the sample has n_i profiles of which m_i match;
with ``BERNOULLI`` each row is its own page):
- one source, whose row count N is exact (kept with its members): the ratio estimator N·R, R = Σm/Σn,
  with variance (1−f)/f² · k/(k−1) · Σ(m_i − R·n_i)² over the k sampled pages. With one row per page that
  is the design notes' N²·R(1−R)/n·(1−n/N). Counting pages, not rows, as the units keeps the error honest
  when neighbouring rows are alike (a pushed batch of one country lands on the same pages).
- several sources (a FULL JOIN whose size is not known without a pass): each profile is drawn from the
  first source that has it, with probability f, so Σm/f is unbiased, with variance (1−f)/f² · Σm_i².
The 95 % interval is ±t standard errors (Student's t for the number of sampled pages less one: 1.96 for
large samples), narrowed to what the sample proves (at least the matches seen)
and, when no sampled profile matched (or all did), widened by the "rule of three" (3/f rows per page).
"""

from __future__ import annotations

import datetime as dt
import math
import random
import time
from typing import Any

import asyncpg

from gateway.db.names import sql
from gateway.db.queries import QUERIES
from gateway.segmentation.previews import STATE_READY, Prepared, prepare

Z_95 = 1.959963984540054
SAMPLE_METHODS = ("SYSTEM", "BERNOULLI")


async def estimate(conn: asyncpg.Connection, endpoint_id: int, preview: asyncpg.Record, *, exact_ms: int,
                   sample_rows: int, method: str = "SYSTEM", seed: float | None = None) -> dict[str, Any]:
    """The preview's estimate, as ``/api/estimate/{previewId}`` answers it (see the module docstring);
    ``seed``: the sample's (default: a new one each time; a test passes its own to be repeatable)."""
    started = time.perf_counter()
    now: dt.datetime = preview["evaluated_at"]
    async with conn.transaction(isolation="repeatable_read"):
        prepared = await prepare(conn, endpoint_id, preview["expression"], preview["sources"], now)
        total_rows = await conn.fetchval(QUERIES["estimate_source_rows"], prepared.present)
        fraction = min(1.0, sample_rows / total_rows) if total_rows else 1.0
        if fraction >= 1.0 or exact_ms > 0:
            counted = await _exact(conn, prepared, None if fraction >= 1.0 else exact_ms)
            if counted is not None:
                profiles, matched = counted
                return _answer(matched, True, 0.0, matched, matched, profiles, matched, total_rows, started,
                               method=None, fraction=1.0)
        sampling = await prepare(conn, endpoint_id, preview["expression"], preview["sources"], now, first_param=3)
        sums = await conn.fetchrow(sql("estimate_sample", predicate=sampling.predicate,
                                       profiles=sampling.sample(method)), fraction * 100,
                                       float(random.randrange(2**31) if seed is None else seed), *sampling.params)
    size, error, lower, upper = sampled(dict(sums), fraction, total_rows if len(prepared.present) == 1 else None,
                                        per_row=method == "BERNOULLI")
    return _answer(round(size), False, error, lower, upper, int(sums["n"]), int(sums["m"]), total_rows, started,
                   method=method, fraction=fraction)


async def _exact(conn: asyncpg.Connection, prepared: Prepared, budget_ms: int | None) -> tuple[int, int] | None:
    """(profiles, matched), or None when the count did not finish within ``budget_ms`` (None: no limit)."""
    try:
        async with conn.transaction():  # a savepoint: the timeout's cancel leaves the snapshot usable
            if budget_ms is not None:
                await conn.execute(QUERIES["estimate_exact_budget"], f"{int(budget_ms)}ms")
            row = await conn.fetchrow(sql("estimate_exact", predicate=prepared.predicate,
                                          profiles=prepared.relation()), *prepared.params)
            return row["profiles"], row["matched"]
    except asyncpg.QueryCanceledError:
        return None


def sampled(sums: dict[str, float], fraction: float, known_total: int | None, *,
            per_row: bool) -> tuple[float, float, int, int]:
    """(estimate, standard error, lower, upper) from a sample's sums (``estimate_sample``): ``pages``, ``n``,
    ``m``, ``mm``, ``nn``, ``mn``; ``known_total``: the profiles' exact number when it is known (one source)."""
    f = fraction
    pages, n, m = int(sums["pages"]), sums["n"], sums["m"]
    mm, nn, mn = (m, n, m) if per_row else (sums["mm"], sums["nn"], sums["mn"])
    correction = pages / (pages - 1) if pages > 1 else 1.0
    if known_total is not None:
        ratio = m / n if n else 0.0
        size = known_total * ratio
        residuals = max(0.0, mm - 2 * ratio * mn + ratio * ratio * nn)
        variance = (1 - f) / (f * f) * correction * residuals
        ceiling = known_total - (n - m)  # the sampled profiles that did not match are not members
    else:
        size = m / f
        variance = (1 - f) / (f * f) * mm
        ceiling = math.inf
    error = math.sqrt(variance)
    z = t_95(max(1, (int(n) if per_row else pages) - 1))
    lower, upper = max(m, size - z * error), min(ceiling, size + z * error)
    rule_of_three = 3 / f * ((n / pages) if pages and not per_row else 1.0)
    if m == 0:
        upper = min(ceiling, max(upper, rule_of_three))
    if known_total is not None and n and m == n:
        lower = max(m, min(lower, known_total - rule_of_three))
    if n == 0 and known_total is not None:
        upper = known_total
    return size, error, math.floor(lower), math.ceil(upper)


def t_95(df: int) -> float:
    """The two-sided 95 % quantile of Student's t with ``df`` degrees of freedom (Cornish–Fisher expansion,
    within 1 % of the table from 5 degrees up): a SYSTEM sample of few pages has a noisy variance, and
    1.96 would make its interval too narrow."""
    z = Z_95
    return z + (z ** 3 + z) / (4 * df) + (5 * z ** 5 + 16 * z ** 3 + 3 * z) / (96 * df * df)


def _answer(size: int, exact: bool, error: float, lower: float, upper: float, read: int, matched: int,
            total_rows: int, started: float, *, method: str | None, fraction: float) -> dict[str, Any]:
    return {"estimatedSize": int(size), "exact": exact, "confidenceInterval": "95%",
            "standardError": round(error, 2), "lowerBound": int(lower), "upperBound": int(upper),
            "profilesReadSoFar": read, "profilesMatchedSoFar": matched, "totalRows": int(total_rows),
            "sampleMethod": method, "sampleFraction": round(fraction, 6), "state": STATE_READY,
            "estimateTimeInMs": round((time.perf_counter() - started) * 1000)}
