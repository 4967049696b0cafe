"""Kill matrix: SIGKILL `train`, `compress` and `export` at seeded points, resume, compare.

For each command an uninterrupted reference run counts how often each kill point is
reached; a seeded draw then picks, per point, the occurrence at which a second run is
killed (SIGKILL, from inside the process, so the point is exact). The run is then resumed
(`--resume` when the killed run left a state file, else rerun) and must end with:
- every output file byte-identical to the reference's, except the wall-clock fields
  ("time", "wall_s", "elapsed_s", "score_s") of the JSON files and the wall-time column
  of compress's report.md, compared without them;
- nothing left beside the output: no temporary files or directories, no state, no lock.

Kill points (`progress:STAGE` = the n-th progress report of that stage; `module:function`
= the n-th call of that function):
- train: a training step; while the per-epoch state file is written (after the temporary
  file is complete, before the rename); the final save (model directory built, not renamed).
- compress: a block-scoring batch; a recovery training step; the LoRA merge; the final save.
- export: a step of the export; the final rename of the export directory.

Usage (tiny model, 8 synthetic videos, one thread):
    python benchmarks/kill_matrix.py --work /tmp/kills [--seed 0]
Writes benchmarks/results/kill_matrix.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

# The child: install the kill point, then run the command line.
CHILD = r"""
import importlib, json, os, signal, sys
spec, n, counts_file, args = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4:]
points = [p for p in spec.split(",") if p]
counts = {p: 0 for p in points}

def reached(point):
    counts[point] += 1
    if n and counts[point] == n:
        os.kill(os.getpid(), signal.SIGKILL)

from pbd_deploy.cli import base
for point in points:
    where, name = point.split(":")
    if where == "progress":
        def call(self, stage, done, total, _orig=base.RichProgress.__call__, _p=point, _s=name,
                 **figures):
            if stage.split()[0] == _s:
                reached(_p)
            return _orig(self, stage, done, total, **figures)
        base.RichProgress.__call__ = call
    else:
        module = importlib.import_module(where)
        def wrapped(*a, _orig=getattr(module, name), _p=point, **k):
            reached(_p)
            return _orig(*a, **k)
        setattr(module, name, wrapped)
from pbd_deploy.cli import main
try:
    main(args, prog_name="pbd-deploy", standalone_mode=False)
finally:
    if counts_file != "-":
        with open(counts_file, "w") as f:
            json.dump(counts, f)
"""

STATE = "pbd_deploy.core.atomic:_finish_file"  # a file complete under its temporary name
FINAL = "pbd_deploy.core.atomic:_finish_tree"  # an output directory complete, not renamed
POINTS = {
    "train": ["progress:train", STATE, FINAL],
    "compress": ["progress:score", "progress:train", "pbd_deploy.compress.pbd:merge_adapters",
                 FINAL],
    "export": ["progress:export", FINAL],
}  # fmt: skip
LABELS = {
    "progress:train": "training step",
    "progress:score": "block scoring",
    "progress:export": "export step",
    STATE: "state file write",
    FINAL: "final save",
    "pbd_deploy.compress.pbd:merge_adapters": "LoRA merge",
}
STATE_FILES = {"train": ".train-state.pt", "compress": ".pbd-state.pt"}
VOLATILE = {"time", "wall_s", "elapsed_s", "score_s"}  # wall-clock fields of the JSON files


def command_line(command: str, work: Path, out: Path) -> list[str]:
    data, base, small = work / "data", work / "base", work / "small"
    return {
        "train": ["train", "--data", data, "--model", work / "init", "--out", out,
                  "--epochs", "2", "--batch-size", "2"],
        "compress": ["compress", base, "--data", data, "--out", out, "--drop", "2",
                     "--epochs", "1", "--batch-size", "2"],
        "export": ["export", small, "--out", out],
    }[command]  # fmt: skip


def run(args: list, points: list[str], n: int, counts_file: str = "-") -> int:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PBD_TEST_ORT_THREADS="1")
    argv = [sys.executable, "-c", CHILD, ",".join(points), str(n), counts_file]
    proc = subprocess.run(argv + [str(a) for a in args], env=env, capture_output=True, text=True)
    if proc.returncode not in (0, -signal.SIGKILL):
        raise RuntimeError(f"{args[0]} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return proc.returncode


def prepare(work: Path) -> None:
    """8 tiny synthetic videos and an untrained tiny detector (32x32 frames, 4 blocks)."""
    import torch

    from pbd_deploy.core.annotations import load_annotations
    from pbd_deploy.data.synthetic import SynthConfig, make_synthetic
    from pbd_deploy.models.actionformer import HeadConfig
    from pbd_deploy.models.detector import Detector, DetectorConfig, InputConfig
    from pbd_deploy.models.io import save_model
    from pbd_deploy.models.vit import BackboneConfig

    synth = SynthConfig(videos=8, classes=3, min_duration=8, max_duration=12, seed=1,
                        split_fractions=(0.5, 0.125, 0.375))  # fmt: skip
    make_synthetic(work / "data", synth)
    classes = load_annotations(work / "data" / "annotations.json").class_names
    config = DetectorConfig(
        name="videomae-tiny",
        class_names=classes,
        input=InputConfig(window=32, fps=10.0, resize=32, crop=32),
        backbone=BackboneConfig(dim=32, depth=4, heads=2, img_size=32),
        head=HeadConfig(in_dim=32, dim=32, length=16, levels=3, heads=2, attn_window=5,
                        regression_ranges=[[0, 4], [4, 8], [8, 10000]]),
    )  # fmt: skip
    torch.manual_seed(0)
    save_model(Detector(config), work / "init")


def _strip(obj):
    if isinstance(obj, dict):
        return {k: _strip(v) for k, v in obj.items() if k not in VOLATILE}
    if isinstance(obj, list):
        return [_strip(v) for v in obj]
    return obj


def _strip_md(text: bytes) -> list[str]:
    """report.md without the last column of its table (wall time per iteration)."""
    lines = text.decode().splitlines()
    return [ln.rsplit("|", 2)[0] if ln.startswith("|") else ln for ln in lines]


def compare(reference: Path, out: Path) -> list[str]:
    """The files of `out` that differ from `reference` (JSON without wall-clock fields)."""
    names = sorted(p.name for p in reference.iterdir())
    if names != sorted(p.name for p in out.iterdir()):
        return [f"files {sorted(p.name for p in out.iterdir())} != {names}"]
    differ = []
    for name in names:
        a, b = (reference / name).read_bytes(), (out / name).read_bytes()
        if a == b:
            continue
        if name.endswith(".json") and _strip(json.loads(a)) == _strip(json.loads(b)):
            continue
        if name == "report.md" and _strip_md(a) == _strip_md(b):
            continue
        differ.append(name)
    return differ


def leftovers(folder: Path, out: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p != out)


def kill_matrix(work: Path, seed: int = 0, log=print, points: dict | None = None) -> dict:
    """Run the matrix in `work` (emptied first); returns the table's rows and timings.

    `points` ({command: [point, ...]}, default POINTS) runs a part of the matrix.
    """
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    prepare(work)
    rng = random.Random(seed)
    rows, started = [], time.time()
    for command, chosen in (points or POINTS).items():
        ref = work / f"{command}-reference" / "out"
        counts_file = work / f"{command}-counts.json"
        assert run(command_line(command, work, ref), chosen, 0, str(counts_file)) == 0
        counts = json.loads(counts_file.read_text())
        if command == "train":  # the first calls write the state, one per epoch (--epochs 2);
            counts[STATE] = 2  # the final save's files follow
        for name, out_name in (("train", "base"), ("compress", "small")):
            if command == name:
                shutil.copytree(ref, work / out_name)
        for point in chosen:
            n = rng.randint(1, counts[point])
            folder = work / f"{command}-{LABELS[point].replace(' ', '-')}"
            out = folder / "out"
            folder.mkdir()
            args = command_line(command, work, out)
            killed = run(args, [point], n) == -signal.SIGKILL
            state = out.with_name(out.name + STATE_FILES.get(command, "-"))
            resumed = state.is_file()
            left_by_kill = leftovers(folder, out)
            run(args + (["--resume"] if resumed else []), [], 0)
            differ = compare(ref, out)
            left = leftovers(folder, out)
            row = {
                "command": command,
                "point": LABELS[point],
                "occurrence": f"{n}/{counts[point]}",
                "killed": killed,
                "left_by_kill": left_by_kill,
                "resumed_with": "--resume" if resumed else "rerun",
                "differing_files": differ,
                "left_after_resume": left,
                "ok": killed and not differ and not left,
            }
            rows.append(row)
            log(json.dumps(row))
    return {"seed": seed, "rows": rows, "wall_s": round(time.time() - started, 1)}


def markdown(result: dict, machine: str) -> str:
    lines = [
        "# Kill matrix",
        "",
        f"SIGKILL at {len(result['rows'])} points drawn with seed {result['seed']}, then "
        "resumed; tiny detector (4 blocks of width 32), 8 synthetic videos, one thread. "
        f"Machine: {machine}. Wall time {result['wall_s']} s.",
        "Command: `python benchmarks/kill_matrix.py --work /tmp/kills`.",
        "",
        "| command | killed at | occurrence | left by the kill | resumed with | "
        "files differing from the uninterrupted run | left after resuming | outcome |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        lines.append(
            f"| {r['command']} | {r['point']} | {r['occurrence']} | "
            f"{', '.join(r['left_by_kill']) or '-'} | {r['resumed_with']} | "
            f"{', '.join(r['differing_files']) or 'none'} | "
            f"{', '.join(r['left_after_resume']) or 'nothing'} | "
            f"{'identical' if r['ok'] else 'FAILED'} |"
        )
    lines += [
        "",
        "Identical: every file byte for byte, except the wall-clock fields (`time`, `wall_s`, "
        "`elapsed_s`, `score_s`) of JSON files and the wall-time column of report.md, "
        "compared without them.",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, required=True, help="scratch folder (emptied)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    from machine import describe_machine, save_results

    result = kill_matrix(args.work, args.seed)
    m = result["machine"] = describe_machine()
    gpu = f", {m['gpu']}" if m.get("gpu") else ", no GPU"
    save_results("kill_matrix", result, markdown(result, f"{m['cpu']}, {m['cores']} cores{gpu}"))
    if not all(r["ok"] for r in result["rows"]):
        sys.exit(1)


if __name__ == "__main__":
    main()
