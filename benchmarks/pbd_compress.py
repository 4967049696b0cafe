"""Headline and ablations of Progressive Block Drop on the default synthetic benchmark.

From the trained videomae-tiny baseline (`pbd-deploy quickstart`), drop 3 of 12 blocks:
- headline: progressive, `map` criterion, full alignment loss; test mAP before the drop,
  after the drop without recovery, and after recovery;
- ablations at the same total recovery epochs: all 3 blocks at once (`--one-shot`), no
  feature alignment (`--w-feat 0`), and the `loss` and `mse` criteria.

Each variant is a `compress_model_dir` run into WORK/<variant>/ (skipped when it already
exists, so an interrupted benchmark continues); the test split is read only here, never by
compress. Writes benchmarks/results/pbd_compress.{json,md}. Usage:
    pbd-deploy quickstart --out qs
    python benchmarks/pbd_compress.py --base qs/base --data qs/data --work runs/ --epochs 2
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from machine import describe_machine, save_results  # noqa: E402

from pbd_deploy.compress.blocks import drop_block  # noqa: E402
from pbd_deploy.compress.config import BlockDropConfig  # noqa: E402
from pbd_deploy.compress.pbd import compress_model_dir  # noqa: E402
from pbd_deploy.data.dataset import TadDataset  # noqa: E402
from pbd_deploy.eval.inference import evaluate_model  # noqa: E402
from pbd_deploy.models.complexity import count_macs  # noqa: E402
from pbd_deploy.models.io import load_model  # noqa: E402

RESULTS = Path(__file__).parent / "results"
VARIANTS = {
    "progressive (headline)": {},
    "one-shot": {"schedule": "one-shot"},
    "no feature alignment": {"w_feat": 0.0},
    "criterion loss": {"criterion": "loss"},
    "criterion mse": {"criterion": "mse"},
    "drop 4 (progressive)": {"drop": 4},  # 28.9% of the tiny backbone's MACs
}


def test_map(model, dataset) -> dict:
    result, _ = evaluate_model(model, dataset, "test")
    return {"mAP": [float(m) for m in result.mAP], "average_mAP": float(result.average_mAP)}


def run_variant(name, options, args) -> dict:
    out = Path(args.work) / name.split(" (")[0].replace(" ", "-")
    config = BlockDropConfig(**{"drop": 3, "epochs": args.epochs, "seed": args.seed, **options})
    if not (out / "report.json").is_file():
        state = out.with_name(out.name + ".pbd-state.pt")
        compress_model_dir(args.base, args.data, out, config, resume=state.is_file())
    report = json.loads((out / "report.json").read_text())
    model = load_model(out)
    dataset = TadDataset(args.data, model.config)
    dropped = [b for r in report["iterations"] if r["kept"] for b in r["dropped"]]
    return {
        "variant": name,
        "options": options,
        "dir": str(out),
        "dropped": dropped,
        "kept_blocks": report["kept_blocks"],
        "val_mAP": report["iterations"][-1]["val_mAP"],
        "macs": count_macs(model.config),
        "wall_s": sum(r["wall_s"] for r in report["iterations"]),
        "test": test_map(model, dataset),
    }


def headline(base, dataset, dropped) -> dict:
    """Test mAP of the baseline and of the same blocks dropped without any recovery."""
    unrecovered = base
    for index in dropped:
        unrecovered = drop_block(unrecovered, index)
    return {
        "baseline": {"macs": count_macs(base.config), "test": test_map(base, dataset)},
        "dropped_no_recovery": {
            "macs": count_macs(unrecovered.config),
            "test": test_map(unrecovered, dataset),
        },
    }


def to_markdown(result: dict) -> str:
    base = result["baseline"]
    lines = [
        "# Progressive Block Drop on the default synthetic benchmark (videomae-tiny)",
        "",
        f"Machine: {result['machine']['cpu']}, {result['machine']['cores']} cores. Drop 3 of 12 "
        f"blocks (last row: 4); {result['epochs']} recovery epochs per dropped block (one-shot: "
        f"{3 * result['epochs']} in one recovery). Test split, THUMOS tIoU 0.3:0.1:0.7.",
        "",
        "| model | blocks dropped | backbone GMACs | MACs saved: blocks / backbone "
        "| test avg mAP | mAP@0.3 / 0.5 / 0.7 | val avg mAP |",
        "|---|---|---|---|---|---|---|",
    ]

    def row(label, entry, dropped, val=""):
        macs = entry["macs"]["backbone"]
        saved = 1 - macs / base["macs"]["backbone"]
        blocks = 1 - sum(entry["macs"]["blocks"]) / sum(base["macs"]["blocks"])
        m = entry["test"]["mAP"]
        lines.append(
            f"| {label} | {dropped} | {macs / 1e9:.4f} | {100 * blocks:.1f}% / {100 * saved:.1f}% "
            f"| {100 * entry['test']['average_mAP']:.2f} "
            f"| {100 * m[0]:.2f} / {100 * m[2]:.2f} / {100 * m[4]:.2f} | {val} |"
        )

    row("baseline", base, "-", f"{100 * result['baseline_val_mAP']:.2f}")
    first = result["variants"][0]
    row("headline blocks dropped, no recovery", result["dropped_no_recovery"], first["dropped"])
    for v in result["variants"]:
        row(v["variant"], v, v["dropped"], f"{100 * v['val_mAP']:.2f}")
    delta = 100 * (first["test"]["average_mAP"] - base["test"]["average_mAP"])
    lines += [
        "",
        f"Headline: test average mAP change after recovery {delta:+.2f} points.",
        "",
        "Backbone MACs include the patch embedding, which is 13% of the tiny backbone (32x32",
        "frames, 64 channels) but 2% of VideoMAE-S's, where 3 of 12 blocks save 24.5%.",
        "One seed per variant: differences under about a point are not shown to be significant.",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", required=True, help="The trained videomae-tiny model dir.")
    parser.add_argument("--data", required=True)
    parser.add_argument("--work", required=True, help="Where the compressed models go.")
    parser.add_argument("--epochs", type=int, default=BlockDropConfig.epochs)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", nargs="*", help="Run only these variants (by name).")
    args = parser.parse_args()
    chosen = {k: v for k, v in VARIANTS.items() if not args.only or k in args.only}
    variants = [run_variant(name, options, args) for name, options in chosen.items()]
    base = load_model(args.base)
    dataset = TadDataset(args.data, base.config)
    result = {
        "machine": describe_machine(),
        "epochs": args.epochs,
        "baseline_val_mAP": base.config.history[-1].get("val_mAP"),
        **headline(base, dataset, variants[0]["dropped"]),
        "variants": variants,
    }
    save_results("pbd_compress", result, to_markdown(result))
    print(to_markdown(result))


if __name__ == "__main__":
    main()
