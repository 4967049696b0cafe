"""`pbd-deploy quickstart`, timed: synth, train, eval, compress, eval, export with the defaults.

Calls `pbd_deploy.quickstart.run_quickstart`, the function the command runs, and writes
benchmarks/results/quickstart.json and .md: seconds per stage and the test-split mAP of
the trained, the compressed and the exported model. Usage:
    python benchmarks/quickstart.py [--work /tmp/pbd-quickstart-bench]
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from machine import describe_machine, save_results  # noqa: E402

from pbd_deploy.quickstart import QuickstartConfig, run_quickstart  # noqa: E402

STAGES = {
    "synth": "synth ({videos} videos)",
    "train": "train ({epochs} epochs)",
    "eval_base": "eval base (test split)",
    "compress": "compress (Progressive Block Drop)",
    "eval_small": "eval compressed (test split)",
    "export": "export (ONNX + its test mAP)",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", default="/tmp/pbd-quickstart-bench")
    args = parser.parse_args()
    shutil.rmtree(args.work, ignore_errors=True)
    config = QuickstartConfig()
    result = run_quickstart(args.work, config)
    out = {
        "machine": describe_machine(),
        "command": "pbd-deploy quickstart",
        "config": config.to_dict(),
        "seconds": result.seconds,
        "total_s": sum(result.seconds.values()),
        "best_epoch": result.train["best_epoch"],
        "val_average_mAP": result.train["best_val_mAP"],
        "kept_blocks": result.compress["kept_blocks"],
        "backbone_macs_kept": result.backbone_macs_kept,
        "test": {
            "base": result.base.to_json(),
            "compressed": result.small.to_json(),
            "onnx_average_mAP": result.onnx_average_mAP,
        },
    }
    save_results("quickstart", out, markdown(out, config, result))
    print(markdown(out, config, result))


def markdown(out: dict, config: QuickstartConfig, result) -> str:
    m = out["machine"]
    names = {k: v.format(videos=config.synth.videos, epochs=config.train.epochs)
             for k, v in STAGES.items()}  # fmt: skip
    lines = [
        f"# `pbd-deploy quickstart`, timed ({m['cpu']}, {m['cores']} cores, "
        f"{m['torch_threads']} torch threads)",
        "",
        "| stage | seconds |",
        "|---|---|",
        *(f"| {names[k]} | {s:.0f} |" for k, s in out["seconds"].items()),
        f"| **total** | **{out['total_s']:.0f}** |",
        "",
        f"Best epoch {out['best_epoch']} (val average mAP {out['val_average_mAP']:.4f}); "
        f"compressed model keeps blocks {out['kept_blocks']} "
        f"({out['backbone_macs_kept']:.2f} of the backbone MACs).",
        "",
        "| test mAP (%) | "
        + " | ".join(f"{t:.1f}" for t in result.base.thresholds)
        + " | average |",
        "|---|" + "---|" * (len(result.base.thresholds) + 1),
    ]
    for name, res in (("base", result.base), ("compressed", result.small)):
        maps = " | ".join(f"{100 * v:.2f}" for v in res.mAP)
        lines.append(f"| {name} | {maps} | {100 * res.average_mAP:.2f} |")
    blank = " | ".join("" for _ in result.base.thresholds)
    lines += [f"| exported ONNX | {blank} | {100 * result.onnx_average_mAP:.2f} |", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
