"""Depth vs width at equal MACs: original, 3 of 12 blocks dropped, width-reduced to the same MACs.

On the CPU: torch and ORT side by side (models interleaved call by call, medians), and the
harness-overhead check against a bare loop. On the 2-core CPU the window is shortened
(default 64 frames for videomae-s, 32 for videomae-b, 16x160x160 chunks), with the head
length scaled to the window so the backbone / head split of MACs stays that of the
768-frame setting. With --device cuda: torch on the GPU at the real 768-frame window, in
--dtype (weights and input cast), timed with CUDA events after warm-up calls (medians).
Writes benchmarks/results/depth_vs_width.json and .md. Usage:
    python benchmarks/depth_vs_width.py [--models videomae-s videomae-b] [--threads 1]
    python benchmarks/depth_vs_width.py --device cuda [--dtype float16]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from machine import describe_machine  # noqa: E402

from pbd_deploy.bench.config import BenchConfig  # noqa: E402
from pbd_deploy.bench.latency import harness_overhead  # noqa: E402
from pbd_deploy.bench.report import markdown_table  # noqa: E402
from pbd_deploy.bench.run import _bench_backend, run_bench  # noqa: E402
from pbd_deploy.bench.runners import Runner, make_runner  # noqa: E402
from pbd_deploy.bench.sources import Source, load_source  # noqa: E402
from pbd_deploy.bench.width import backbone_macs, init_narrow  # noqa: E402
from pbd_deploy.compress.blocks import drop_block  # noqa: E402
from pbd_deploy.models.detector import Detector  # noqa: E402
from pbd_deploy.models.io import save_model  # noqa: E402
from pbd_deploy.models.registry import model_config  # noqa: E402

RESULTS = Path(__file__).parent / "results"
CLASSES = [f"class{i}" for i in range(20)]
DROP = [3, 7, 11]  # 3 of 12 blocks; which ones does not change latency
WINDOWS = {"videomae-s": 64, "videomae-b": 32}  # CPU windows (frames)
GPU_WINDOW = 768  # the real THUMOS14 window (registry's videomae-* input), 48 chunks
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def variants(name: str, window: int, out: Path) -> list[Path]:
    """Save original, depth-dropped and equal-MACs width-reduced models; their dirs."""
    config = model_config(name, CLASSES, window=window)
    config.head.length = window  # keeps the head's share of MACs as at 768 frames / 768 points
    torch.manual_seed(0)
    base = Detector(config).eval()
    depth = base
    for index in DROP:
        depth = drop_block(depth, index)
    width = init_narrow(config, backbone_macs(depth.config))
    dirs = []
    for suffix, model in (("", base), ("-drop3", depth), ("-narrow", width)):
        dirs.append(save_model(model, out / f"{name}{suffix}"))
    return dirs


def overhead(model_dir: Path, threads: int, iters: int, rounds: int, workdir: Path) -> dict:
    """Harness vs bare loop on the real model (ORT CPU), plus the harness's own per-call
    cost measured on a no-op call, which bounds the overhead free of machine noise."""
    config = BenchConfig(backends=["ort"], threads=threads, iters=iters, warmup=1)
    runner = make_runner(load_source(model_dir, config), "ort", config, workdir)
    runner.call()
    on_model = harness_overhead(runner, iters, rounds, progress=lambda *a, **k: None)
    noop = Runner(source=runner.source, backend="none", device="cpu", call=lambda: None)
    on_noop = harness_overhead(noop, 20000, 3, progress=lambda *a, **k: None)
    per_call_s = (on_noop["harness_wall_ms"] - on_noop["bare_ms"]) / 1e3
    return {
        "model": model_dir.name,
        "backend": "ort",
        **on_model,
        "harness_cost_per_call_us": per_call_s * 1e6,
        "harness_cost_vs_p50": per_call_s / (on_model["bare_ms"] / 1e3),
    }


def cuda_bench(dirs: list[Path], config: BenchConfig, dtype: str, progress) -> dict:
    """The harness of `pbd-deploy bench` (warm-up, interleaved rounds, CUDA events, peak
    memory) on torch CUDA runners whose weights and input are in `dtype`."""
    sources = [load_source(d, config) for d in dirs]
    runners = [_cuda_runner(s, DTYPES[dtype]) for s in sources]
    return {"rows": _bench_backend(runners, config, progress)}


def _cuda_runner(source: Source, dtype: torch.dtype) -> Runner:
    model = source.model.to("cuda", dtype).eval()
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(source.shape, generator=gen).to("cuda", dtype)

    def call():
        with torch.inference_mode():
            return model.predict(x)

    return Runner(source, "torch", "cuda", call, "cuda_events", info={"dtype": str(dtype)})


def paired_speedup(base: dict, other: dict) -> float:
    """Median over rounds of base / other latency within the same round: calls adjacent in
    time share the machine's load, so this resists other processes better than p50 / p50."""
    return statistics.median(b / o for b, o in zip(base["samples_ms"], other["samples_ms"]))


def summary(rows: list[dict]) -> list[dict]:
    out = []
    for backend in dict.fromkeys(r["backend"] for r in rows):
        got = [r for r in rows if r["backend"] == backend]
        base = got[0]
        depth = next(r for r in got if r["model"].endswith("-drop3"))
        width = next(r for r in got if r["model"].endswith("-narrow"))
        out.append(
            {
                "backend": backend,
                "depth_speedup": depth["speedup"],
                "depth_ideal": depth["ideal_speedup"],
                "depth_efficiency": depth["efficiency"],
                "width_speedup": width["speedup"],
                "width_ideal": width["ideal_speedup"],
                "width_efficiency": width["efficiency"],
                "depth_over_width": depth["speedup"] / width["speedup"],
                "depth_paired_speedup": paired_speedup(base, depth),
                "width_paired_speedup": paired_speedup(base, width),
                "depth_paired_efficiency": paired_speedup(base, depth) / depth["ideal_speedup"],
            }
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(WINDOWS))
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument(
        "--dtype", choices=list(DTYPES), default="float32", help="other than float32: cuda only"
    )
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--iters", type=int, default=15)
    parser.add_argument("--warmup", type=int, default=None, help="default: 2 (cpu), 3 (cuda)")
    parser.add_argument(
        "--overhead-iters", type=int, default=None, help="0: skip; default 5 (cpu), 0 (cuda)"
    )
    parser.add_argument("--merge", action="store_true", help="keep other models' results")
    args = parser.parse_args()
    cuda = args.device == "cuda"
    if args.dtype != "float32" and not cuda:
        parser.error(f"--dtype {args.dtype} needs --device cuda")
    if cuda and not torch.cuda.is_available():
        parser.error("--device cuda needs a CUDA GPU and a CUDA build of torch; none found")
    if args.warmup is None:
        args.warmup = 3 if cuda else 2
    if args.overhead_iters is None:
        args.overhead_iters = 0 if cuda else 5  # the overhead check runs ORT on the CPU
    torch.set_num_threads(args.threads)
    result = {"machine": describe_machine(args.device), "settings": vars(args), "models": {}}
    if args.merge and (RESULTS / "depth_vs_width.json").is_file():
        result["models"] = json.loads((RESULTS / "depth_vs_width.json").read_text())["models"]
    result["load_before"] = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="dvw-") as tmp:
        tmp = Path(tmp)
        for name in args.models:
            window = GPU_WINDOW if cuda else WINDOWS.get(name, 32)
            dirs = variants(name, window, tmp)
            config = BenchConfig(
                backends=["torch"] if cuda else ["torch", "ort"],
                device=args.device,
                threads=args.threads,
                iters=args.iters,
                warmup=args.warmup,
                power=False,
            )
            start = time.time()
            if cuda:
                bench = cuda_bench(dirs, config, args.dtype, progress=_progress(name))
            else:
                bench = run_bench(dirs, config, progress=_progress(name))
            entry = {"window": window, "rows": bench["rows"], "summary": summary(bench["rows"])}
            entry["seconds"] = time.time() - start
            entry["load_after"] = os.getloadavg()
            entry["settings"] = dict(vars(args), run_at=time.strftime("%H:%M UTC", time.gmtime()))
            if name == args.models[0] and args.overhead_iters:
                entry["overhead"] = overhead(dirs[0], args.threads, args.overhead_iters, 3, tmp)
            if "overhead" not in entry and "overhead" in result["models"].get(name, {}):
                entry["overhead"] = result["models"][name]["overhead"]  # from the earlier run
            result["models"][name] = entry
            _print(name, entry)
    result["load_after"] = os.getloadavg()
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "depth_vs_width.json").write_text(json.dumps(result, indent=2) + "\n")
    (RESULTS / "depth_vs_width.md").write_text(markdown(result))
    print(markdown(result))


def _progress(name):
    def report(stage, done, total, **figures):
        if done == total or done % 5 == 0:
            print(f"  {name} {stage} {done}/{total}", flush=True)

    return report


def _print(name: str, entry: dict) -> None:
    for s in entry["summary"]:
        print(
            f"{name} {s['backend']}: depth {s['depth_speedup']:.3f}x (ideal "
            f"{s['depth_ideal']:.3f}, efficiency {s['depth_efficiency']:.3f}); width "
            f"{s['width_speedup']:.3f}x (ideal {s['width_ideal']:.3f})",
            flush=True,
        )


def markdown(result: dict) -> str:
    if result["settings"].get("device", "cpu") == "cuda":
        return _markdown_cuda(result)
    m = result["machine"]
    lines = [
        f"# Depth vs width at equal MACs ({m['cpu']}, {m['cores']} cores, no GPU)",
        "",
        "CPU only, a fixed thread count for torch and ORT, models interleaved call by call "
        "(round r runs original, depth, width before round r+1). Speedup is the ratio of p50 "
        "latencies, ideal speedup the ratio of MACs, efficiency their ratio; the paired "
        "speedup is the median over rounds of the within-round latency ratio, which resists "
        "the load of other processes better. Depth: blocks 3, 7, 11 of 12 dropped. Width: "
        "every block narrowed (fewer heads of the same size, smaller MLP) to the "
        "depth-dropped backbone MACs. Other processes share these 2 cores: see the load "
        "averages (1/5/15 min) and the p90 / p50 spread.",
        "",
    ]
    for name, entry in result["models"].items():
        st = entry.get("settings", result["settings"])
        lines += [
            f"## {name}, {entry['window']}-frame 160x160 window "
            f"({entry['window'] // 16} chunks of 16), batch 1",
            "",
            f"{st['threads']} thread(s), {st['iters']} timed calls per model after "
            f"{st['warmup']} warm-up calls; finished at {st.get('run_at', '?')}, load average "
            f"{_load(entry.get('load_after', result['load_after']))}. Video seconds assume "
            "30 fps (the config records none).",
            "",
            markdown_table(entry["rows"]),
            "| backend | depth speedup | paired | ideal | efficiency | paired efficiency "
            "| width speedup | paired | ideal | efficiency | depth / width |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        lines += [
            f"| {x['backend']} | {x['depth_speedup']:.3f} | {_f(x.get('depth_paired_speedup'))} "
            f"| {x['depth_ideal']:.3f} | {x['depth_efficiency']:.3f} | "
            f"{_f(x.get('depth_paired_efficiency'))} | {x['width_speedup']:.3f} | "
            f"{_f(x.get('width_paired_speedup'))} | {x['width_ideal']:.3f} | "
            f"{x['width_efficiency']:.3f} | {x['depth_over_width']:.3f} |"
            for x in entry["summary"]
        ]
        lines.append("")
        if "overhead" in entry:
            o = entry["overhead"]
            lines += [
                f"Harness overhead ({o['model']}, ORT CPU, {o['rounds']} alternating rounds of "
                f"{o['iters']} calls{_when(o)}): bare loop {o['bare_ms']:.1f} ms/call, "
                f"harness-reported mean {o['harness_ms']:.1f} ms ({100 * o['latency_overhead']:+.2f}%), harness "
                f"wall time {o['harness_wall_ms']:.1f} ms ({100 * o['wall_overhead']:+.2f}%). "
                f"The harness's own cost per call, measured on a no-op call, is "
                f"{o['harness_cost_per_call_us']:.1f} us = "
                f"{100 * o['harness_cost_vs_p50']:.1e}% of this model's latency.",
                "",
            ]
    return "\n".join(lines)


def _markdown_cuda(result: dict) -> str:
    m, st = result["machine"], result["settings"]
    lines = [
        f"# Depth vs width at equal MACs ({m['gpu']}, torch {st['dtype']})",
        "",
        f"torch on the GPU, weights and input in {st['dtype']}, models interleaved call by "
        "call (round r runs original, depth, width before round r+1), each call timed with "
        f"CUDA events after {st['warmup']} warm-up calls per model; {st['iters']} timed calls "
        "per model. Speedup is the ratio of p50 latencies, ideal speedup the ratio of MACs, "
        "efficiency their ratio; the paired speedup is the median over rounds of the "
        "within-round latency ratio. Depth: blocks 3, 7, 11 of 12 dropped. Width: every "
        "block narrowed (fewer heads of the same size, smaller MLP) to the depth-dropped "
        f"backbone MACs. GPU clocks: {m.get('gpu_clocks') or '?'}.",
        "",
    ]
    for name, entry in result["models"].items():
        lines += [
            f"## {name}, {entry['window']}-frame 160x160 window "
            f"({entry['window'] // 16} chunks of 16), batch 1",
            "",
            markdown_table(entry["rows"]),
            "| backend | depth speedup | paired | ideal | efficiency | width speedup | paired "
            "| ideal | efficiency | depth / width |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        lines += [
            f"| {x['backend']} | {x['depth_speedup']:.3f} | {x['depth_paired_speedup']:.3f} "
            f"| {x['depth_ideal']:.3f} | {x['depth_efficiency']:.3f} | "
            f"{x['width_speedup']:.3f} | {x['width_paired_speedup']:.3f} | "
            f"{x['width_ideal']:.3f} | {x['width_efficiency']:.3f} | "
            f"{x['depth_over_width']:.3f} |"
            for x in entry["summary"]
        ]
        lines.append("")
    return "\n".join(lines)


def _when(overhead: dict) -> str:
    return f"; {overhead['measured_at']}" if "measured_at" in overhead else ""


def _f(value) -> str:
    return "-" if value is None else f"{value:.3f}"


def _load(load) -> str:
    return "/".join(f"{x:.2f}" for x in load)


if __name__ == "__main__":
    main()
