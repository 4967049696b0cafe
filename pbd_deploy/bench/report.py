"""Bench reports: a rich table for the terminal, JSON for machines, markdown, a PNG plot.

Files are written with core/atomic's `write_file` (temporary name, fsync, rename).
"""

from __future__ import annotations

import json
from pathlib import Path

from pbd_deploy.core.atomic import write_file

COLUMNS = [
    ("model", "model"),
    ("backend", "backend"),
    ("p50 ms", "p50_ms"),
    ("p90 ms", "p90_ms"),
    ("p99 ms", "p99_ms"),
    ("mean ms", "mean_ms"),
    ("windows/s", "windows_per_s"),
    ("video s/s", "video_s_per_s"),
    ("peak MiB", "peak_mb"),
    ("GMACs", "gmacs"),
    ("params M", "params_m"),
    ("speedup", "speedup"),
    ("ideal", "ideal_speedup"),
    ("efficiency", "efficiency"),
    ("J/window", "joules_per_window"),
]


def flat(row: dict) -> dict:
    """One bench row as the flat values of the table's columns (None where unknown)."""
    return {
        **{k: row.get(k) for k in ("model", "backend", "windows_per_s", "video_s_per_s")},
        **{k: row["latency"][k] for k in ("p50_ms", "p90_ms", "p99_ms", "mean_ms")},
        "peak_mb": (row.get("memory") or {}).get("peak_mb"),
        "gmacs": row["macs"] / 1e9 if row.get("macs") else None,
        "params_m": row["params"] / 1e6 if row.get("params") else None,
        "speedup": row.get("speedup"),
        "ideal_speedup": row.get("ideal_speedup"),
        "efficiency": row.get("efficiency"),
        "joules_per_window": (row.get("power") or {}).get("joules_per_window"),
    }


def _fmt(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 10 else f"{value:.1f}"
    return str(value)


def _used_columns(rows: list[dict]) -> list[tuple[str, str]]:
    # Drop columns no row has (J/window off a Jetson), so the table fits a terminal.
    flats = [flat(r) for r in rows]
    return [(t, k) for t, k in COLUMNS if any(f[k] is not None for f in flats)]


def rich_table(result: dict):
    """A rich Table of the result's rows (the CLI prints it)."""
    from rich.table import Table

    m = result["machine"]
    table = Table(title=f"pbd-deploy bench on {m['gpu'] or m['cpu']}")
    columns = _used_columns(result["rows"])
    for title, _ in columns:
        table.add_column(title, justify="left" if title in ("model", "backend") else "right")
    for row in result["rows"]:
        f = flat(row)
        table.add_row(*(_fmt(f[k]) for _, k in columns))
    return table


def gemm_table(result: dict):
    """A rich Table of a GEMM probe: FLOP/s per variant, token count and op."""
    from rich.table import Table

    gpu = result["config"]["device"] == "cuda"
    unit, scale = ("TFLOP/s", 1e12) if gpu else ("GFLOP/s", 1e9)
    table = Table(title=f"GEMM probe, {result['model']}: {result['variants_note']}")
    for col in ("variant", "tokens", "op", "m x k x n", "ms", unit):
        table.add_column(col, justify="left" if col in ("variant", "op") else "right")
    for r in result["rows"]:
        dims = f"{r['batch']}x {r['m']} x {r['k']} x {r['n']}" if r["k"] else "sum of the block"
        dims = dims.removeprefix("1x ")
        flops = r["gflops_per_s"] * 1e9 / scale
        table.add_row(
            r["variant"],
            str(r["tokens"]),
            r["op"],
            dims,
            f"{r['seconds'] * 1e3:.3f}",
            f"{flops:.2f}",
        )
    return table


def markdown_table(rows: list[dict]) -> str:
    """The rows as a markdown table (used by benchmarks/ and the README)."""
    columns = _used_columns(rows)
    lines = [
        "| " + " | ".join(t for t, _ in columns) + " |",
        "|" + "---|" * len(columns),
    ]
    for row in rows:
        f = flat(row)
        lines.append("| " + " | ".join(_fmt(f[k]) for _, k in columns) + " |")
    return "\n".join(lines) + "\n"


def write_json(result: dict, path: str | Path) -> Path:
    return write_file(_folder(path), json.dumps(result, indent=2))


def write_plot(result: dict, path: str | Path) -> Path:
    """PNG: p50 latency per model (whisker up to p90) and measured vs ideal speedup,
    one bar per backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["rows"]
    backends = list(dict.fromkeys(r["backend"] for r in rows))
    models = list(dict.fromkeys(r["model"] for r in rows))
    fig, (ax_lat, ax_speed) = plt.subplots(1, 2, figsize=(11, 4))
    width = 0.8 / len(backends)
    for i, backend in enumerate(backends):
        by_model = {r["model"]: r for r in rows if r["backend"] == backend}
        xs = [j + i * width for j, m in enumerate(models) if m in by_model]
        got = [by_model[m] for m in models if m in by_model]
        p50 = [r["latency"]["p50_ms"] for r in got]
        p90 = [r["latency"]["p90_ms"] - r["latency"]["p50_ms"] for r in got]
        ax_lat.bar(xs, p50, width, yerr=[[0] * len(p90), p90], label=backend, capsize=3)
        ax_speed.bar(xs, [r["speedup"] for r in got], width, label=f"{backend} measured")
        ideal = [r["ideal_speedup"] or float("nan") for r in got]
        ax_speed.scatter(xs, ideal, marker="_", s=400, color="k", zorder=3)
    for ax, ylabel in ((ax_lat, "latency p50 (ms), whisker to p90"), (ax_speed, "speedup")):
        ax.set_xticks([j + width * (len(backends) - 1) / 2 for j in range(len(models))])
        ax.set_xticklabels(models, rotation=15, ha="right")
        ax.set_ylabel(ylabel)
        ax.legend(fontsize=8)
    ax_speed.set_title("measured (bars) vs ideal = MACs ratio (black ticks)", fontsize=9)
    fig.tight_layout()

    def save(tmp: Path):
        fig.savefig(tmp, format="png", dpi=120)

    try:
        return write_file(_folder(path), save)
    finally:
        plt.close(fig)


def _folder(path: str | Path) -> Path:
    """`path`, its folder created."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path
