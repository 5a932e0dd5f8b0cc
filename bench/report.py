"""What a run leaves: the JSON of every figure, a table on stdout, PNG charts (when matplotlib is there)."""

from __future__ import annotations

import json
from pathlib import Path


def write_json(path: Path, report: dict) -> None:
    path.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")


def _rate(value: float | None) -> str:
    return "" if value is None else f"{value / 1000:,.0f}k/s"


def _gateway_cell(name: str, figures: dict) -> str:
    if name == "latency":
        return f"p50 {figures['p50_ms']} ms, p99 {figures['p99_ms']} ms ({figures['samples']} GETs)"
    text = f"{figures['seconds']:.2f} s ({_rate(figures['rows_per_s'])})"
    if name == "big":
        text += f", peak RSS {figures['rss_peak_mb']} MB (idle {figures['rss_baseline_mb']} MB)"
    return text


def _anchor_cells(figures: dict) -> tuple[str, str]:
    if "psql_s" not in figures:
        return "", ""
    ratio = f"{figures['vs_psql']}×"
    if "throughput_vs_psql" in figures:
        ratio += f" (throughput {figures['throughput_vs_psql']}×)"
    return f"{figures['psql_s']:.2f} s ({_rate(figures['psql_rows_per_s'])})", ratio


def _naive_cell(figures: dict) -> str:
    naive = figures.get("naive")
    if not naive:
        return ""
    if "rss_peak_mb" in naive:
        return f"{naive['rows']:,} rows in one request: {naive['seconds']:.1f} s, peak RSS {naive['rss_peak_mb']} MB"
    capped = f", capped at {naive['rows_done']:,} rows → projected {naive['projected_s']:.0f} s" \
        if naive["capped"] else ""
    return f"{naive['seconds']:.1f} s{capped} ({_rate(naive['rows_per_s'])}); gateway {figures['vs_naive_speedup']}× faster"


def table(report: dict) -> str:
    """A Markdown table (also what README "Performance" shows)."""
    lines = ["| scenario | rows | gateway | `psql` anchor | gateway / psql time | naive peer | targets |",
             "|---|---|---|---|---|---|---|"]
    for name, figures in report["scenarios"].items():
        psql, ratio = _anchor_cells(figures)
        targets = "; ".join(f"{t['target']}: {'met' if t['met'] else 'NOT met'}" for t in figures.get("targets", []))
        lines.append(f"| {name} | {figures['rows']:,} | {_gateway_cell(name, figures)} | {psql} | {ratio} | "
                     f"{_naive_cell(figures)} | {targets} |")
    return "\n".join(lines)


def charts(report: dict, out_dir: Path, stamp: str) -> list[Path]:
    """rows/s against the anchors, and RSS over time of the big request; [] without matplotlib."""
    try:
        import matplotlib
    except ImportError:
        return []
    matplotlib.use("Agg")
    from matplotlib import pyplot

    written = []
    scenarios = report["scenarios"]
    measured = [name for name, figures in scenarios.items() if "rows_per_s" in figures]
    if measured:
        series = {"gateway": [scenarios[n]["rows_per_s"] for n in measured],
                  "psql \\copy": [scenarios[n].get("psql_rows_per_s", 0) for n in measured],
                  "naive peer": [scenarios[n]["naive"]["rows_per_s"] if n == "replace" else 0 for n in measured]}
        figure, axes = pyplot.subplots(figsize=(8, 4))
        width = 0.8 / len(series)
        for i, (label, values) in enumerate(series.items()):
            axes.bar([x + i * width for x in range(len(measured))], [v / 1000 for v in values], width, label=label)
        axes.set_xticks([x + width for x in range(len(measured))], measured)
        axes.set_ylabel("thousand rows/s (higher is better)")
        axes.set_title(f"audience-gateway, {report['options']['rows']:,} rows, {report['machine']['cpus']} CPUs")
        axes.legend()
        written.append(_save(figure, out_dir / f"{stamp}-throughput.png"))
    if "big" in scenarios:
        big = scenarios["big"]
        figure, axes = pyplot.subplots(figsize=(8, 3))
        for label, figures in ((f"gateway, {big['rows']:,} rows", big),
                               (f"naive peer, {big['naive']['rows']:,} rows", big["naive"])):
            axes.plot([t for t, _ in figures["rss_series_mb"]], [mb for _, mb in figures["rss_series_mb"]],
                      label=f"{label} (peak {figures['rss_peak_mb']} MB)")
        axes.axhline(150, color="red", linestyle="--", label="target 150 MB")
        axes.set_xlabel("seconds")
        axes.set_ylabel("RSS (MB)")
        axes.set_ylim(bottom=0)
        axes.set_title("RSS during one REPLACE request")
        axes.legend()
        written.append(_save(figure, out_dir / f"{stamp}-rss.png"))
    return written


def _save(figure, path: Path) -> Path:
    from matplotlib import pyplot

    figure.tight_layout()
    figure.savefig(path, dpi=80)
    pyplot.close(figure)
    return path
