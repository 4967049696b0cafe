"""The compression report: report.json, report.md (a table of iterations) and report.png."""

from __future__ import annotations

import io
import json


def report_json(report: dict) -> str:
    return json.dumps(report, indent=2) + "\n"


def _rows(report: dict):
    """(blocks dropped, record) for the baseline and every iteration."""
    base = report["baseline"]
    dropped = 0
    yield 0, {**base, "dropped": [], "val_mAP_before": base["val_mAP"], "kept": True}
    for record in report["iterations"]:
        if record.get("kept", True):
            dropped += len(record["dropped"])
        yield dropped, record


def report_markdown(report: dict) -> str:
    """A table of iterations: what was dropped, why, and what it cost and saved."""
    base = report["baseline"]
    lines = [
        "# Progressive Block Drop report",
        "",
        f"Criterion `{report['config']['criterion']}`, schedule `{report['config']['schedule']}`,"
        f" {report['config']['epochs']} recovery epochs per dropped block.",
        f"Kept blocks: {report['kept_blocks']}.",
        "",
        "| iter | dropped | best score | kept blocks | GMACs | MACs kept | params (M) "
        "| val mAP before recovery | val mAP after | best epoch | wall (s) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for _, r in _rows(report):
        best = _best_score(r)
        kept_note = "" if r.get("kept", True) else " (undone)"
        lines.append(
            f"| {r['iteration']} | {r['dropped']}{kept_note} | {best} | {len(r['kept_blocks'])}"
            f" | {r['macs'] / 1e9:.4f} | {r['macs'] / base['macs']:.3f}"
            f" | {r['params'] / 1e6:.3f} | {100 * r['val_mAP_before']:.2f}"
            f" | {100 * r['val_mAP']:.2f} | {r.get('best_epoch', '')} | {r.get('wall_s', '')} |"
        )
    if report.get("stopped"):
        lines += ["", f"Stopped early: {report['stopped']}."]
    lines += ["", "Scores of every candidate block (original index: score), per iteration:", ""]
    for r in report["iterations"]:
        scores = ", ".join(f"{b}: {s:.4f}" for b, s in r["scores"].items()) or "none (given)"
        lines.append(f"- iteration {r['iteration']} ({r['criterion']}): {scores}")
    return "\n".join(lines) + "\n"


def _best_score(record: dict) -> str:
    scores = record.get("scores") or {}
    picked = [scores[b] for b in record["dropped"] if b in scores]
    return ", ".join(f"{s:.4f}" for s in picked) if picked else "-"


def report_plot(report: dict) -> bytes:
    """PNG: val mAP and MACs kept against the number of blocks dropped."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    base_macs = report["baseline"]["macs"]
    points = [(n, r) for n, r in _rows(report) if r.get("kept", True)]
    blocks = [n for n, _ in points]
    fig, left = plt.subplots(figsize=(6, 4))
    left.plot(blocks, [100 * r["val_mAP"] for _, r in points], "o-", label="val mAP, recovered")
    left.plot(
        blocks,
        [100 * r["val_mAP_before"] for _, r in points],
        "x--",
        label="val mAP, before recovery",
    )
    left.set_xlabel("blocks dropped")
    left.set_ylabel("val average mAP (%)")
    right = left.twinx()
    right.plot(blocks, [r["macs"] / base_macs for _, r in points], "s:", color="grey", label="MACs")
    right.set_ylabel("MACs kept (fraction)")
    handles = left.get_legend_handles_labels()[0] + right.get_legend_handles_labels()[0]
    fig.legend(handles=handles, loc="upper center", ncol=3, fontsize=8, frameon=False)
    left.set_xticks(blocks)
    fig.tight_layout(rect=(0, 0, 1, 0.93))
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    return buffer.getvalue()
