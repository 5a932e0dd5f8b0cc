"""``audience-gateway top``: a live view of a gateway's ``/metrics`` (rates from two scrapes a second apart).

On a terminal the screen is redrawn every interval until ``q`` or Ctrl-C; otherwise (a pipe, a log) each
refresh is printed as plain lines. ``--once`` prints one refresh and exits (scripts and tests).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
import termios
import time
import tty
from collections.abc import Iterator
from typing import TextIO

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

Samples = dict[tuple[str, frozenset], float]
CLEAR = "\x1b[H\x1b[2J"
P = "audience_gateway_"


class Unreachable(RuntimeError):
    """The gateway's /metrics did not answer 200."""


async def scrape(session: aiohttp.ClientSession, url: str) -> Samples:
    try:
        async with session.get(url.rstrip("/") + "/metrics") as response:
            if response.status != 200:
                raise Unreachable(f"{url}/metrics answered {response.status}")
            text = await response.text()
    except aiohttp.ClientError as exc:
        raise Unreachable(f"{url}/metrics: {exc}") from None
    return {(sample.name, frozenset(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def total(samples: Samples, name: str, **labels: str) -> float:
    """The sum of a metric's samples whose labels include ``labels``."""
    wanted = set(labels.items())
    return sum(value for (sample, sample_labels), value in samples.items()
               if sample == name and wanted <= sample_labels)


def errors(samples: Samples, first_digit: str) -> float:
    return sum(value for (sample, labels), value in samples.items()
               if sample == P + "request_duration_seconds_count" and dict(labels).get("status", "")[:1] == first_digit)


def render(url: str, before: Samples, after: Samples, seconds: float) -> list[str]:
    """The screen: rates over the last interval, then current gauges and totals."""
    def rate(name: str, **labels: str) -> float:
        return max(0.0, total(after, name, **labels) - total(before, name, **labels)) / seconds

    received, invalid = rate(P + "rows_received_total"), rate(P + "rows_invalid_total")
    by_method = "  ".join(f"{method} {rate(P + 'rows_received_total', method=method):,.1f}"
                          for method in ("POST", "PUT", "DELETE"))
    errors_4xx = max(0.0, errors(after, "4") - errors(before, "4")) / seconds
    errors_5xx = max(0.0, errors(after, "5") - errors(before, "5")) / seconds
    jobs = "  ".join(f"{status} {total(after, P + 'jobs', status=status):.0f}"
                     for status in ("waiting", "running", "complete", "error"))
    return [
        f"audience-gateway top  {url}  {time.strftime('%H:%M:%S')}",
        f"rows/s        {received:,.1f}   ({by_method})",
        f"invalid/s     {invalid:,.1f}   ({100 * invalid / received if received else 0:.1f} %)",
        f"MB/s          in {rate(P + 'received_bytes_total') / 1e6:,.2f}   out {rate(P + 'sent_bytes_total') / 1e6:,.2f}",
        f"in flight     uploads {total(after, P + 'uploads_in_flight'):.0f}",
        f"sessions      open {total(after, P + 'replace_sessions_open'):.0f}   "
        f"commits {total(after, P + 'replace_commits_total'):.0f}   expiries {total(after, P + 'replace_expiries_total'):.0f}",
        f"jobs          {jobs}",
        f"errors/s      4xx {errors_4xx:,.1f}   5xx {errors_5xx:,.1f}",
        f"pool          open {total(after, P + 'pool_connections'):.0f}   "
        f"in use {total(after, P + 'pool_connections_in_use'):.0f}",
        f"totals        rows received {total(after, P + 'rows_received_total'):,.0f}   "
        f"invalid {total(after, P + 'rows_invalid_total'):,.0f}",
    ]


async def run(url: str, key: str | None, *, once: bool, interval: float = 1.0, out: TextIO = sys.stdout) -> int:
    terminal = out.isatty() and sys.stdin.isatty() and not once
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    quit_pressed = asyncio.Event()
    async with aiohttp.ClientSession(headers=headers, timeout=aiohttp.ClientTimeout(total=10)) as session:
        with _keys_pressed(quit_pressed) if terminal else contextlib.nullcontext():
            before, taken = await scrape(session, url), time.monotonic()
            while True:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(interval):
                        await quit_pressed.wait()
                if quit_pressed.is_set():
                    return 0
                after, now = await scrape(session, url), time.monotonic()
                lines = render(url, before, after, now - taken)
                out.write((CLEAR + "\n".join(lines) + "\n\n(q or Ctrl-C quits)") if terminal
                          else "\n".join(lines) + "\n\n")
                out.flush()
                if once:
                    return 0
                before, taken = after, now


@contextlib.contextmanager
def _keys_pressed(quit_pressed: asyncio.Event) -> Iterator[None]:
    """Single key presses (and Ctrl-C) (no Enter) while the view runs; ``q`` sets ``quit_pressed``."""
    fd = sys.stdin.fileno()
    saved = termios.tcgetattr(fd)
    loop = asyncio.get_running_loop()

    def on_key() -> None:
        if sys.stdin.read(1).lower() == "q":
            quit_pressed.set()

    tty.setcbreak(fd)
    loop.add_reader(fd, on_key)
    loop.add_signal_handler(signal.SIGINT, quit_pressed.set)  # Ctrl-C: leave cleanly, terminal restored
    try:
        yield
    finally:
        loop.remove_signal_handler(signal.SIGINT)
        loop.remove_reader(fd)
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)
