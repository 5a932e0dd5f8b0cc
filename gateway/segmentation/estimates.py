"""Estimates: how many profiles a preview's expression selects, exact when that is affordable.

First an exact count over the profiles under a statement timeout of ``GATEWAY_ESTIMATE_EXACT_MS`` (skipped
when it is 0); if it does not finish in time, a sample of about ``GATEWAY_ESTIMATE_SAMPLE_ROWS`` source rows
(``TABLESAMPLE SYSTEM``: whole pages, read in a fraction of the time a full pass takes) in the same
snapshot. A sample whose fraction would be 100 % is the exact count, whatever the budget.

The sample's arithmetic. f is the sampling fraction; each source s has N_s rows (its member count, exact:
it is kept with its members, and read in the estimate's snapshot). Every sampled row stands for its
identity's profile, and counts (y = 1) when its source is the first that has the identity and the profile
matches: so the profiles that match are Σ_s Y_s, Y_s the sum of y over source s's rows, each estimated
with the ratio estimator of a cluster sample of known size. A sampled page i of source s has n_i rows
of which m_i count (with ``BERNOULLI`` each row is its own page):
  Ŷ_s = N_s·R_s, R_s = Σm/Σn, with variance (1−f)/f² · k/(k−1) · Σ(m_i − R_s·n_i)² over its k pages.
With one source and one row per page that is the design notes' N²·R(1−R)/n·(1−n/N). Counting pages, not
rows, as the units keeps the error honest when neighbouring rows are alike (a pushed batch of one country
lands on the same pages); the sources are sampled independently (a seed each), so their variances add.
The 95 % interval is ±t standard errors (Student's t for the pages sampled less one: 1.96 for large
samples), narrowed to what the sample proves (at least the matches seen, at most the rows not seen to
miss) and, when no sampled row counted (or every one did), widened by the "rule of three" (3/f rows per
page).
"""

from __future__ import annotations

import datetime as dt
import math
import random
import time
from collections.abc import Sequence
from typing import Any

import asyncpg

from gateway.db.names import sql
from gateway.db.queries import QUERIES
from gateway.segmentation import insegment
from gateway.segmentation.previews import STATE_READY, Prepared, prepare

Z_95 = 1.959963984540054


async def estimate(conn: asyncpg.Connection, endpoint_id: int, preview: asyncpg.Record, *, exact_ms: int,
                   sample_rows: int, method: str = "SYSTEM", seed: float | None = None) -> dict[str, Any]:
    """The preview's estimate, as ``/api/estimate/{previewId}`` answers it (see the module docstring);
    ``seed``: the sample's (default: a new one each time; a test passes its own to be repeatable)."""
    return await estimate_expression(conn, endpoint_id, preview["expression"], preview["sources"],
                                     preview["evaluated_at"], exact_ms=exact_ms, sample_rows=sample_rows,
                                     method=method, seed=seed)


async def estimate_expression(conn: asyncpg.Connection, endpoint_id: int, expression: str,
                              sources: Sequence[int] | None, now: dt.datetime, *, exact_ms: int, sample_rows: int,
                              method: str = "SYSTEM", seed: float | None = None) -> dict[str, Any]:
    """How many profiles ``expression`` over ``sources`` selects (relative dates against ``now``): a
    preview's estimate, or a definition's as ``validate`` shows it. 400 as ``prepare``."""
    started = time.perf_counter()
    return await insegment.repeatable_read(conn, lambda: _estimate(conn, endpoint_id, expression, sources, now,
                                                                   exact_ms, sample_rows, method, seed, started))


async def _estimate(conn: asyncpg.Connection, endpoint_id: int, expression: str, sources: Sequence[int] | None,
                    now: dt.datetime, exact_ms: int, sample_rows: int, method: str, seed: float | None,
                    started: float) -> dict[str, Any]:
    """``estimate_expression``'s work, in its snapshot (``prepare`` first: it share-locks the sources)."""
    prepared = await prepare(conn, endpoint_id, expression, sources, now)
    counts = {row["id"]: row["member_count"] for row in
              await conn.fetch(QUERIES["estimate_source_rows"], prepared.present)}
    rows = [counts[segment_id] for segment_id in prepared.present]  # in the sample's source order
    total_rows = sum(rows)
    fraction = min(1.0, sample_rows / total_rows) if total_rows else 1.0
    if fraction >= 1.0 or exact_ms > 0:
        counted = await _exact(conn, prepared, None if fraction >= 1.0 else exact_ms)
        if counted is not None:
            profiles, matched = counted
            return _answer(matched, True, 0.0, matched, matched, profiles, matched, total_rows, started,
                           method=None, fraction=1.0)
    sampling = await prepare(conn, endpoint_id, expression, sources, now, first_param=3)
    sums = await conn.fetch(sql("estimate_sample", predicate=sampling.predicate, profiles=sampling.sample(method)),
                            fraction * 100, float(random.randrange(2**31) if seed is None else seed),
                            *sampling.params)
    by_source = {int(row["source"]): dict(row) for row in sums}
    size, error, lower, upper = sampled([by_source.get(n) for n in range(1, len(rows) + 1)], rows, fraction,
                                        per_row=method == "BERNOULLI")
    return _answer(round(size), False, error, lower, upper, sum(int(row["profiles"]) for row in sums),
                   sum(int(row["m"]) for row in sums), total_rows, started, method=method, fraction=fraction)


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


def sampled(sums: list[dict[str, float] | None], rows: list[int], fraction: float, *,
            per_row: bool) -> tuple[float, float, int, int]:
    """(estimate, standard error, lower, upper) from a sample's sums per source (``estimate_sample``:
    ``pages``, ``n``, ``m``, ``mm``, ``nn``, ``mn``; None for a source none of whose rows was sampled) and
    the sources' row counts, in the same order (see the module docstring)."""
    f = fraction
    size = variance = 0.0
    seen = matched = pages = unknown = 0
    ceiling = 0.0
    for part, total in zip(sums, rows):
        if part is None:  # nothing of this source was sampled: all of it may count
            ceiling += total
            unknown += total
            continue
        n, m = part["n"], part["m"]
        mm, nn, mn = (m, n, m) if per_row else (part["mm"], part["nn"], part["mn"])
        k = int(part["pages"])
        ratio = m / n
        size += total * ratio
        correction = k / (k - 1) if k > 1 else 1.0
        variance += (1 - f) / (f * f) * correction * max(0.0, mm - 2 * ratio * mn + ratio * ratio * nn)
        ceiling += total - (n - m)  # a sampled row that does not count is not among the matches
        seen, matched, pages = seen + n, matched + m, pages + k
    error = math.sqrt(variance)
    z = t_95(max(1, (int(seen) if per_row else pages) - 1))
    lower, upper = max(matched, size - z * error), min(ceiling, size + z * error + unknown)
    rule_of_three = 3 / f * ((seen / pages) if pages and not per_row else 1.0)
    if matched == 0:
        upper = min(ceiling, max(upper, rule_of_three))
    if seen and matched == seen:  # every sampled row counted
        lower = max(matched, min(lower, size - rule_of_three))
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
