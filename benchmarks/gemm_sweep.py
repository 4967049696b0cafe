"""GEMM sweep: achieved FLOP/s of the block GEMMs at full width and narrowed to equal MACs.

For videomae-s and videomae-b with 3 of 12 blocks dropped, the width variant's blocks are
narrowed to the same backbone MACs; dropping depth keeps the full-width shapes. Times
torch.matmul per shape (CPU: perf_counter, fixed threads; GPU: CUDA events via cuBLAS,
when run with --device cuda). Writes benchmarks/results/gemm_sweep.json and .md. Usage:
    python benchmarks/gemm_sweep.py [--device cpu] [--threads 1] [--tokens 800 1600 3200 6400]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from machine import describe_machine  # noqa: E402

from pbd_deploy.bench.gemm import GemmConfig  # noqa: E402
from pbd_deploy.bench.probe import probe_model  # noqa: E402

RESULTS = Path(__file__).parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["videomae-s", "videomae-b"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--tokens", type=int, nargs="+", default=[800, 1600, 3200, 6400])
    parser.add_argument("--iters", type=int, default=5)
    parser.add_argument("--attention", action="store_true")
    args = parser.parse_args()
    config = GemmConfig(
        device=args.device,
        tokens=args.tokens,
        iters=args.iters,
        warmup=2,
        threads=args.threads,
        attention=args.attention,
    )
    result = {
        "machine": describe_machine(args.device),
        "settings": vars(args),
        "load": {},
        "models": {},
    }
    for name in args.models:
        result["load"][name] = os.getloadavg()
        result["models"][name] = probe_model(name, 3, config)
        print(f"{name}: done", flush=True)
    RESULTS.mkdir(exist_ok=True)
    stem = "gemm_sweep" if args.device == "cpu" else f"gemm_sweep_{args.device}"
    (RESULTS / f"{stem}.json").write_text(json.dumps(result, indent=2) + "\n")
    (RESULTS / f"{stem}.md").write_text(markdown(result))
    print(markdown(result))


def markdown(result: dict) -> str:
    m, s = result["machine"], result["settings"]
    gpu = s["device"] == "cuda"
    unit, scale = ("TFLOP/s", 1e3) if gpu else ("GFLOP/s", 1)
    where = m["gpu"] if gpu else f"{m['cpu']}, {s['threads']} thread(s)"
    lines = [
        f"# GEMM sweep ({where})",
        "",
        f"torch.matmul per block GEMM, median of {s['iters']} calls; tokens = rows M "
        "(800 = one 16-frame 160x160 chunk). Dropping 3 of 12 blocks keeps the full-width "
        "shapes, so its GEMM speedup is 12/9 by construction; the width variant narrows "
        "every block to the same MACs. Full and narrow shapes are timed interleaved, call "
        "by call, at each token count.",
        "",
    ]
    for name, probe in result["models"].items():
        v = probe["variants"]
        lines += [
            f"## {name}: {probe['variants_note']}",
            "",
            f"Backbone GMACs per 768-frame window: full {v['full']['backbone_gmacs']:.1f}, "
            f"depth {v['depth']['backbone_gmacs']:.1f}, width {v['narrow']['backbone_gmacs']:.1f}.",
            "",
            f"| tokens | op | full m x k x n | full {unit} | narrow m x k x n | narrow {unit} "
            "| narrow / full |",
            "|---|---|---|---|---|---|---|",
        ]
        rows = {(r["variant"], r["tokens"], r["op"]): r for r in probe["rows"]}
        for tokens in s["tokens"]:
            for op in [
                r["op"] for r in probe["rows"] if r["variant"] == "full" and r["tokens"] == tokens
            ]:
                f, n = rows["full", tokens, op], rows["narrow", tokens, op]
                lines.append(
                    f"| {tokens} | {op} | {_dims(f)} | {f['gflops_per_s'] / scale:.1f} | "
                    f"{_dims(n)} | {n['gflops_per_s'] / scale:.1f} | "
                    f"{n['gflops_per_s'] / f['gflops_per_s']:.3f} |"
                )
        lines += [
            "",
            "| tokens | depth GEMM speedup | width GEMM speedup | width ideal | "
            "narrow block efficiency vs full |",
            "|---|---|---|---|---|",
        ]
        lines += [
            f"| {x['tokens']} | {x['depth_gemm_speedup']:.3f} | {x['width_gemm_speedup']:.3f} "
            f"| {x['width_ideal_speedup']:.3f} | {x['narrow_vs_full_efficiency']:.3f} |"
            for x in probe["summary"]
        ]
        lines.append("")
    return "\n".join(lines)


def _dims(row: dict) -> str:
    if row["k"] is None:
        return "block"
    batch = f"{row['batch']} x " if row["batch"] > 1 else ""
    return f"{batch}{row['m']} x {row['k']} x {row['n']}"


if __name__ == "__main__":
    main()
