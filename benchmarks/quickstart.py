"""The foundation target: `synth` + `train --model videomae-tiny` with the defaults.

Times each stage and scores the test split; writes benchmarks/results/quickstart.json and .md.
Target: under 10 minutes on 2 CPU cores, test average mAP between 0.5 and 0.9. Usage:
    python benchmarks/quickstart.py [--work /tmp/pbd-quickstart]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from machine import describe_machine, save_results  # noqa: E402

from pbd_deploy.data.synthetic import SynthConfig, make_synthetic  # noqa: E402
from pbd_deploy.eval.evaluate import evaluate_path  # noqa: E402
from pbd_deploy.train import TrainConfig, train_model_dir  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", default="/tmp/pbd-quickstart-bench")
    args = parser.parse_args()
    work = Path(args.work)
    shutil.rmtree(work, ignore_errors=True)
    t0 = time.perf_counter()
    data = make_synthetic(work / "data", SynthConfig())
    t1 = time.perf_counter()
    summary = train_model_dir(data, "videomae-tiny", work / "base", TrainConfig())
    t2 = time.perf_counter()
    result = evaluate_path(work / "base", data=data, split="test")
    t3 = time.perf_counter()
    out = {
        "machine": describe_machine(),
        "commands": [
            "pbd-deploy synth DATA",
            "pbd-deploy train --data DATA --out base/",
            "pbd-deploy eval base/ --data DATA --split test",
        ],
        "synth_s": t1 - t0,
        "train_s": t2 - t1,
        "eval_s": t3 - t2,
        "total_s": t3 - t0,
        "best_epoch": summary["best_epoch"],
        "val_average_mAP": summary["best_val_mAP"],
        "test": result.to_json(),
        "epochs": summary["epochs"],
    }
    m = out["machine"]
    lines = [
        f"# Quickstart: synth + train videomae-tiny + eval ({m['cpu']}, {m['cores']} cores)",
        "",
        "| stage | seconds |",
        "|---|---|",
        f"| synth ({SynthConfig().videos} videos) | {out['synth_s']:.0f} |",
        f"| train ({len(summary['epochs'])} epochs) | {out['train_s']:.0f} |",
        f"| eval (test split) | {out['eval_s']:.0f} |",
        f"| **total** | **{out['total_s']:.0f}** |",
        "",
        f"Best epoch {out['best_epoch']} (val average mAP {out['val_average_mAP']:.4f}).",
        "",
        "| tIoU | " + " | ".join(f"{t:.1f}" for t in result.thresholds) + " | average |",
        "|---|" + "---|" * (len(result.thresholds) + 1),
        "| test mAP | "
        + " | ".join(f"{100 * v:.2f}" for v in result.mAP)
        + f" | {100 * result.average_mAP:.2f} |",
        "",
    ]
    save_results("quickstart", out, "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
