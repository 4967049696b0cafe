"""Shape check: every named VideoMAE size builds; VideoMAE-S runs one real window on the CPU.

Writes benchmarks/results/shape_check.json and .md. Usage:
    python benchmarks/shape_check.py [--model videomae-s] [--window 768]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from machine import describe_machine, save_results  # noqa: E402

from pbd_deploy.models.complexity import count_macs, count_params  # noqa: E402
from pbd_deploy.models.detector import Detector  # noqa: E402
from pbd_deploy.models.registry import model_config  # noqa: E402

CLASSES = [f"class{i}" for i in range(20)]  # THUMOS14 has 20


def sizes_table() -> list[dict]:
    rows = []
    for name in ["videomae-tiny", "videomae-s", "videomae-b", "videomae-l", "videomae-h"]:
        config = model_config(name, CLASSES)
        with torch.device("meta"):
            params = count_params(Detector(config))
        macs = count_macs(config)
        rows.append(
            {
                "model": name,
                "params_M": params / 1e6,
                "GMACs": macs["total"] / 1e9,
                "backbone_GMACs": macs["backbone"] / 1e9,
                "head_GMACs": macs["head"] / 1e9,
                "window": config.input.window,
                "crop": config.input.crop,
            }
        )
    return rows


def run_window(name: str, window: int) -> dict:
    config = model_config(name, CLASSES, window=window)
    torch.manual_seed(0)
    model = Detector(config).eval()
    frames = torch.randn(1, 3, window, config.input.crop, config.input.crop)
    with torch.inference_mode():
        start = time.perf_counter()
        scores, segments = model.predict(frames)
        seconds = time.perf_counter() - start
    return {
        "model": name,
        "window": window,
        "crop": config.input.crop,
        "seconds": seconds,
        "GMACs": count_macs(config)["total"] / 1e9,
        "scores": list(scores.shape),
        "segments": list(segments.shape),
        "finite": bool(torch.isfinite(scores).all()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="videomae-s")
    parser.add_argument("--window", type=int, default=768)
    args = parser.parse_args()
    result = {
        "machine": describe_machine(),
        "sizes": sizes_table(),
        "cpu_window": run_window(args.model, args.window),
        "published": {"model": "VideoMAE-S + ActionFormer (PBD paper)", "GMACs": 286.3},
    }
    w = result["cpu_window"]
    lines = [
        f"# Shape check ({result['machine']['cpu']}, {result['machine']['cores']} cores)",
        "",
        "| model | params (M) | GMACs / window | backbone | head | window |",
        "|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['model']} | {r['params_M']:.1f} | {r['GMACs']:.1f} | {r['backbone_GMACs']:.1f}"
        f" | {r['head_GMACs']:.2f} | {r['window']} x {r['crop']}^2 |"
        for r in result["sizes"]
    ]
    lines += [
        "",
        f"{w['model']}, one {w['window']}-frame {w['crop']}x{w['crop']} window on the "
        f"CPU: {w['seconds']:.1f} s, {w['GMACs']:.1f} GMACs, outputs {w['scores']} scores "
        f"and {w['segments']} segments (finite: {w['finite']}).",
        "",
    ]
    save_results("shape_check", result, "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
