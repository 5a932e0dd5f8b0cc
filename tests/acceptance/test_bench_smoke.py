"""bench/ never rots: ``python -m bench`` runs every scenario at 10k rows and reports every figure.

Only that the figures are there and plausible, not that they are fast (the machine is shared).
Charts are checked where matplotlib is installed (the ``[bench]`` extra, not ``[test]``); without it
the run must say it skipped them.
"""

import json
import subprocess
import sys

from bench.scenarios import SCENARIOS
from tests.conftest import REPO

ROWS = 10_000
# measured beside psql in the same run
ANCHORED = ["replace", "add", "add-seq", "remove", "export", "export-files", "two-serve", "erase-wide", "erase-deep",
            "segment-job", "estimate"]


def test_every_scenario_runs_and_reports_its_figures(tmp_path):
    result = subprocess.run([sys.executable, "-m", "bench", "--rows", str(ROWS), "--repeats", "1",
                             "--out", str(tmp_path)], cwd=REPO, capture_output=True, text=True, timeout=100)
    assert result.returncode == 0, result.stderr

    [path] = tmp_path.glob("bench-*.json")
    report = json.loads(path.read_text())
    figures = report["scenarios"]
    assert list(figures) == list(SCENARIOS)
    assert report["machine"]["cpus"] >= 1 and report["machine"]["postgresql"]
    assert report["options"]["rows"] == ROWS

    for name in ANCHORED:
        assert figures[name]["seconds"] > 0 and figures[name]["rows_per_s"] > 0, name
        assert figures[name]["psql_s"] > 0 and figures[name]["vs_psql"] > 0, name
    assert figures["replace"]["rows"] == ROWS and figures["replace"]["batches"] == 100
    assert figures["remove"]["rows"] == ROWS // 10
    assert figures["replace"]["naive"]["rows_done"] == ROWS and not figures["replace"]["naive"]["capped"]
    assert figures["replace"]["vs_naive_speedup"] > 0
    assert figures["export"]["download_mb"] > 0 and figures["export"]["throughput_vs_psql"] > 0
    assert figures["export-files"]["file_mb"] >= 0 and figures["export-files"]["csv"]["vs_psql"] > 0
    assert figures["big"]["rows"] == 10 * ROWS
    assert 0 < figures["big"]["rss_baseline_mb"] <= figures["big"]["rss_peak_mb"]
    assert figures["big"]["rss_series_mb"]
    assert figures["latency"]["samples"] > 0 and 0 < figures["latency"]["p50_ms"] <= figures["latency"]["p99_ms"]
    assert figures["two-serve"]["processes"] == 2 and figures["two-serve"]["committed_once"]
    assert figures["push"]["rows"] == ROWS and figures["push"]["batches"] == 100
    assert figures["push"]["seconds"] > figures["push"]["counting_s"] >= 0 and figures["push"]["plain_client_s"] > 0
    assert figures["erase-wide"]["segments"] == 10 and figures["erase-deep"]["rows"] == ROWS // 100
    assert figures["hashing"]["rows"] == ROWS and figures["hashing"]["plain_s"] > 0
    assert figures["hashing"]["vs_plain"] > 0
    assert 0.08 * ROWS < figures["segment-job"]["selected"] < 0.12 * ROWS and figures["segment-job"]["build_ms"]
    assert figures["estimate"]["exact"] == [True]
    assert figures["estimate"]["estimated"] == [figures["estimate"]["expected"]]

    table = result.stdout.splitlines()
    for name in SCENARIOS:
        assert any(line.startswith(f"| {name} |") for line in table), name

    charts = sorted(tmp_path.glob("bench-*.png"))
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        assert not charts and "charts skipped" in result.stderr
    else:
        assert [c.name.rsplit("-", 1)[1] for c in charts] == ["rss.png", "throughput.png"]
        assert all(c.read_bytes().startswith(b"\x89PNG") for c in charts)


def test_the_replace_profile_runs():
    result = subprocess.run([sys.executable, "-m", "bench.profile", "--rows", "2000"], cwd=REPO,
                            capture_output=True, text=True, timeout=100)
    assert result.returncode == 0, result.stderr
    assert "measured REPLACE of 2,000 rows" in result.stdout
    statements = result.stdout.split("statements by total time")[1]
    assert "COPY" in statements and "COMMIT" in statements
    assert "share of the gateway's busy samples" in result.stdout or "py-spy is not installed" in result.stdout
