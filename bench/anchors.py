"""The anchors every scenario is measured beside, in the same run on the same PostgreSQL server:
``psql \\copy`` into a keyed table (the limit) and the naive peer (what a quick implementation does)."""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

from bench.common import SQL, run_psql, start_listening, timed_psql

COPY_OPTIONS = "WITH (FORMAT csv, HEADER true)"


def copy_in_seconds(dsn: str, csv_path: Path) -> float:
    """``psql \\copy`` of the file into a fresh table with a text primary key."""
    run_psql(dsn, SQL["anchor_create"])
    return timed_psql(dsn, f"\\copy bench_anchor FROM '{csv_path}' {COPY_OPTIONS}")


def remove_seconds(dsn: str, csv_path: Path, gone_path: Path) -> float:
    """REMOVE done by psql: ``\\copy`` the identities into a temporary table, ``DELETE … USING`` it,
    in one transaction, on a keyed table loaded (untimed) with ``csv_path``."""
    copy_in_seconds(dsn, csv_path)
    return timed_psql(dsn, SQL["anchor_gone_create"], f"\\copy bench_gone FROM '{gone_path}' {COPY_OPTIONS}",
                      SQL["anchor_remove"], single_transaction=True)


def copy_out_seconds(dsn: str, segment_id: str, attributes: int, out_path: Path) -> float:
    """``psql \\copy (SELECT …) TO`` of a segment's members, columns as the export writes them."""
    columns = ", ".join(f"attrs[{i}]" for i in range(1, attributes + 1))
    return timed_psql(dsn, f"\\copy (SELECT {columns} FROM audience.members_{int(segment_id)}) TO '{out_path}' CSV")


def erase_one_seconds(dsn: str, segment_ids: list[str], identity: str) -> float:
    """An erasure done by psql: one ``DELETE`` per members table, in one transaction (``identity`` is one
    of the benchmark's generated emails: no quote in it)."""
    return timed_psql(dsn, *(SQL["anchor_erase_one"].format(segment_id=int(segment_id), identity=identity)
                             for segment_id in segment_ids), single_transaction=True)
def copy_out_gzip_seconds(dsn: str, segment_id: str, attributes: int, out_path: Path) -> float:
    """``psql \\copy (SELECT …) TO PROGRAM 'gzip > file'``: the same rows piped through gzip (its default
    level, as the gateway's), both running at once."""
    columns = ", ".join(f"attrs[{i}]" for i in range(1, attributes + 1))
    return timed_psql(dsn, f"\\copy (SELECT {columns} FROM audience.members_{int(segment_id)}) "
                           f"TO PROGRAM 'gzip > {out_path}' CSV")


def member_count(dsn: str, segment_id: str) -> int:
    return int(run_psql(dsn, SQL["member_count"].format(segment_id=int(segment_id))))


class NaivePeer:
    """bench/peers/naive.py as its own process, on its own port, against ``dsn``."""

    def __init__(self, dsn: str) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        argv = [sys.executable, "-m", "bench.peers.naive", "--database-url", dsn, "--port", str(port)]
        self.process, self.url = start_listening(argv, dict(os.environ))
        self.dsn = dsn

    @property
    def pid(self) -> int:
        return self.process.pid

    def count(self) -> int:
        return int(run_psql(self.dsn, SQL["naive_count"]))

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(60)
