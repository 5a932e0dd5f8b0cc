"""Progress on stderr: one line redrawn in place on a terminal, plain periodic lines otherwise.

Shows rows (when counted), MB, MB/s and the ETA when the total is known. Messages (``note``) are printed
on their own line without garbling the progress line.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

MB = 1_000_000


class Progress:
    def __init__(self, label: str, *, total_bytes: int | None = None, total_rows: int | None = None,
                 stream: TextIO | None = None, interval: float | None = None) -> None:
        self.label = label
        self.total_bytes = total_bytes
        self.total_rows = total_rows
        self.stream = stream if stream is not None else sys.stderr
        self.tty = self.stream.isatty()
        self.interval = interval if interval is not None else (0.1 if self.tty else 5.0)
        self.rows = 0
        self.bytes = 0
        self.started = time.monotonic()
        self._shown_at = self.started
        self._drawn = False

    def advance(self, nbytes: int, rows: int = 0) -> None:
        self.bytes += nbytes
        self.rows += rows
        if time.monotonic() - self._shown_at >= self.interval:
            self._show()

    def restart_bytes(self, nbytes: int) -> None:
        """A download starts over (or resumes) at ``nbytes``."""
        self.bytes = nbytes

    def note(self, message: str) -> None:
        self._clear()
        print(message, file=self.stream, flush=True)

    def finish(self) -> None:
        self._show()
        if self.tty:
            print(file=self.stream, flush=True)
            self._drawn = False

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def line(self) -> str:
        elapsed = max(self.elapsed, 1e-9)
        rate = self.bytes / elapsed
        parts = [self.label]
        if self.total_rows is not None:
            parts.append(f"{self.rows:,}/{self.total_rows:,} rows")
        elif self.rows:
            parts.append(f"{self.rows:,} rows")
        size = f"{self.bytes / MB:,.1f}" + (f"/{self.total_bytes / MB:,.1f}" if self.total_bytes else "")
        parts.append(f"{size} MB")
        parts.append(f"{rate / MB:,.1f} MB/s")
        if self.total_rows and 0 < self.rows < self.total_rows:
            parts.append(f"ETA {_clock((self.total_rows - self.rows) * elapsed / self.rows)}")
        elif self.total_bytes and 0 < self.bytes < self.total_bytes:
            parts.append(f"ETA {_clock((self.total_bytes - self.bytes) / rate)}")
        parts.append(_clock(elapsed))
        return "  ".join(parts)

    def _show(self) -> None:
        self._shown_at = time.monotonic()
        if self.tty:
            self.stream.write("\r" + self.line() + "\x1b[K")
            self.stream.flush()
            self._drawn = True
        else:
            print(self.line(), file=self.stream, flush=True)

    def _clear(self) -> None:
        if self._drawn:
            self.stream.write("\r\x1b[K")
            self._drawn = False


def _clock(seconds: float) -> str:
    seconds = int(seconds + 0.5)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
