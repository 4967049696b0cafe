"""Data pipeline at real scale: peak memory and windows/s of training and evaluation
against the number of videos, and the old whole-video path beside it.

Videos are real-size synthetic ones (172x172 pixels, 30 fps, 2-6 minutes, H.264). The
model is videomae-s-shaped (width 384, 12 blocks, 160x160 crops of 182-pixel frames) with a
short window on the CPU (`--window`, default 32 frames; the head scaled to it). Each
measurement runs in a fresh process; the peak is the largest memory of that process and its
loader workers together (summed PSS, sampled every 100 ms), so sets of 8, 32 and 128 videos are
compared side by side in one run (the first batch of each, which starts the workers, is
not timed):

- stream: the DataLoader path (`--workers` processes, default 2): one training epoch's
  plan over all videos, then `--train-steps` steps of it (default: the whole epoch), and
  `--eval-windows` sliding windows of evaluation (default: all). "wait" is the share of
  wall time the training process spent waiting for the next batch.
- old: the path before the streaming pipeline, measured on the smallest set: every train
  video decoded whole and kept, the epoch's float32 windows built before the first step.

Rendering 128 real-size videos takes about an hour on two busy cores, so `--unique N`
renders N videos and the sets name them repeatedly (symlinks under new video ids; every id
is indexed, decoded and cached on its own, so memory behaves as with distinct files).
`--unique 128` renders every video.

Writes benchmarks/results/data_scale.{json,md}. Usage:
    python benchmarks/data_scale.py --work /tmp/data_scale [--sets 8,32,128] [--unique 4]
        [--train-steps 12] [--eval-windows 24] [--workers 2] [--window 32]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from machine import describe_machine, save_results  # noqa: E402

BATCH = 2


def render(work: Path, args) -> Path:
    from pbd_deploy.data.synthetic import SynthConfig, make_synthetic

    out = work / f"rendered{args.unique}-{args.min_duration:g}-{args.max_duration:g}"
    if not (out / "annotations.json").is_file():
        config = SynthConfig(videos=max(args.unique, 3), classes=3, size=172, fps=30.0,
                             min_duration=args.min_duration, max_duration=args.max_duration,
                             seed=0)  # fmt: skip
        make_synthetic(out, config, force=True)
    return out


def build_set(work: Path, rendered: Path, count: int, unique: int) -> Path:
    """A data set of `count` video ids, all in the training subset, naming rendered files."""
    out = work / f"{rendered.name}-set{count}"
    if (out / "annotations.json").is_file():
        return out
    source = json.loads((rendered / "annotations.json").read_text())
    entries = list(source["database"].items())
    (out / "videos").mkdir(parents=True, exist_ok=True)
    database = {}
    for i in range(count):
        video_id, entry = entries[i % unique]
        name = f"v{i:04d}"
        link = out / "videos" / f"{name}.mp4"
        if not link.exists():
            link.symlink_to((rendered / "videos" / f"{video_id}.mp4").resolve())
        database[name] = {**entry, "subset": "training"}
    (out / "annotations.json").write_text(json.dumps({**source, "database": database}))
    return out


def model_config(classes: list[str], window: int):
    from pbd_deploy.models.registry import model_config as named

    config = named("videomae-s", classes, window=window)
    config.head.length = window // config.backbone.tubelet  # the head scaled to the window
    config.head.levels = 4
    config.head.regression_ranges = [[0, 4], [4, 8], [8, 16], [16, 10000]]
    config.head.attn_window = 9
    return config


class PeakMemory:
    """The largest summed proportional set size (PSS: shared pages split between the
    processes that share them, so forked workers are not counted twice) of this process
    and its children, sampled in a thread."""

    def __init__(self, interval: float = 0.1):
        import psutil

        self.process, self.interval, self.peak = psutil.Process(), interval, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            total = self.process.memory_full_info().pss
            for child in self.process.children(recursive=True):
                try:
                    total += child.memory_full_info().pss
                except Exception:  # a worker that just exited
                    pass
            self.peak = max(self.peak, total)
            time.sleep(self.interval)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def measure(data: str, mode: str, args) -> dict:
    """One measurement, in this (fresh) process."""
    import numpy as np
    import torch

    from pbd_deploy.data.dataset import TadDataset
    from pbd_deploy.data.loader import Batcher, eval_batches
    from pbd_deploy.models.detector import Detector
    from pbd_deploy.train import TrainConfig, Trainer

    classes = json.loads((Path(data) / "annotations.json").read_text())
    names = sorted({a["label"] for v in classes["database"].values() for a in v["annotations"]})
    config = model_config(names, args.window)
    torch.manual_seed(0)
    model = Detector(config)
    rng = np.random.default_rng(0)
    out = {"mode": mode, "videos": len(classes["database"])}
    with PeakMemory() as peak:
        started = time.perf_counter()
        if mode == "old":
            dataset = TadDataset(data, config, cache_mb=2**40)  # no cap
            videos = dataset.split("train")
            for video in videos:
                dataset.load(video)  # every video decoded whole and kept
            order = rng.permutation(len(videos))
            samples = [dataset.training_window(videos[i], rng) for i in order]  # the epoch
            batcher, trainer = Batcher(config), None
            batches = (batcher(samples[i : i + BATCH]) for i in range(0, len(samples), BATCH))
        else:
            dataset = TadDataset(data, config)
            train = TrainConfig(batch_size=BATCH, windows_per_video=1, workers=args.workers)
            trainer = Trainer(model, dataset, train)
            batches = trainer.loader.epoch(rng)
        if trainer is None:
            trainer = Trainer(model, dataset, TrainConfig(batch_size=BATCH, windows_per_video=1))
        trainer.update(next(batches))  # warm-up (workers start, first decode): not timed
        out["prepare_s"] = time.perf_counter() - started
        wait = steps = 0.0
        started = time.perf_counter()
        while steps < (args.train_steps or float("inf")):
            tick = time.perf_counter()
            batch = next(batches, None)
            wait += time.perf_counter() - tick
            if batch is None:
                break
            trainer.update(batch)
            steps += 1
        train_s = time.perf_counter() - started
        out["train"] = {
            "steps": int(steps),
            "windows_per_s": steps * BATCH / train_s,
            "wait_share": wait / train_s,
            "step_s": train_s / steps,
        }
        if mode == "stream":
            model.eval()
            windows = wait = 0.0
            started = time.perf_counter()
            loader = eval_batches(dataset, dataset.split("train"), 8, args.workers)
            with torch.no_grad():
                model.predict(next(loader)[2])  # warm-up, not timed
            while windows < (args.eval_windows or float("inf")):
                tick = time.perf_counter()
                item = next(loader, None)
                wait += time.perf_counter() - tick
                if item is None:
                    break
                with torch.no_grad():
                    model.predict(item[2])
                windows += len(item[1])
            eval_s = time.perf_counter() - started
            out["eval"] = {"windows": int(windows), "windows_per_s": windows / eval_s,
                           "wait_share": wait / eval_s}  # fmt: skip
    out["peak_pss_mb"] = peak.peak / 2**20
    out["load_average"] = os.getloadavg()[0]  # other jobs on the same cores slow every row
    return out


def markdown(result: dict) -> str:
    rows = result["rows"]
    stream = [r for r in rows if r["mode"] == "stream"]
    old = next((r for r in rows if r["mode"] == "old"), None)
    a, m = result["args"], result["machine"]
    machine = f"{m['cpu']}, {m['cores']} cores, {m['gpu'] or 'no GPU'}, torch {m['torch']}"
    lines = [
        f"# Data pipeline at real scale ({machine})",
        "",
        f"videomae-s-shaped model (width 384, 12 blocks, 160x160 crops) on {a['window']}-frame "
        f"windows (the CPU allowance; real runs use 768), batch {BATCH}, {a['workers']} loader "
        f"workers. Videos: 172x172, 30 fps, {a['min_duration']:g}-{a['max_duration']:g} s, "
        f"H.264; {a['unique']} rendered, named "
        "repeatedly by the larger sets. Train: one epoch's plan over all videos, "
        f"{a['train_steps'] or 'all'} steps of it; eval: {a['eval_windows'] or 'all'} "
        "sliding windows; the first batch of each (worker start-up) is not timed. Data wait: "
        "time spent waiting for the next batch, as a share of the loop's wall time.",
        "",
        "| videos | path | peak memory (MB, PSS) | prepare (s) | train windows/s | "
        "data wait (train) | eval windows/s | data wait (eval) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        ev = r.get("eval")
        lines.append(
            f"| {r['videos']} | {r['mode']} | {r['peak_pss_mb']:.0f} | {r['prepare_s']:.0f} | "
            f"{r['train']['windows_per_s']:.3f} | {100 * r['train']['wait_share']:.1f}% | "
            + (f"{ev['windows_per_s']:.3f} | {100 * ev['wait_share']:.1f}% |" if ev else "- | - |")
        )
    if len(stream) > 1:
        ratio = stream[-1]["peak_pss_mb"] / stream[0]["peak_pss_mb"]
        lines += ["", f"Peak memory, {stream[-1]['videos']} vs {stream[0]['videos']} videos "
                  f"(stream): {ratio:.3f}x (target <= 1.15)."]  # fmt: skip
    if old:
        same = next(r for r in stream if r["videos"] == old["videos"])
        lines.append(
            f"Old path at {old['videos']} videos: {old['peak_pss_mb']:.0f} MB, "
            f"{old['peak_pss_mb'] / same['peak_pss_mb']:.1f}x the streaming peak."
        )
    lines.append(
        "prepare: building the loader, the epoch's plan and the first (untimed) step; the old "
        "path decodes every video there. On the CPU the stream path's workers decode on the "
        "cores the model trains on (shared with other jobs here), which can slow its "
        "steps; with a GPU the model does not share them."
    )
    earlier = [f"{r['videos']} ({r['mode']})" for r in rows if r.get("earlier_run")]
    if earlier:
        lines.append(f"Rows {', '.join(earlier)} were measured by earlier invocations of the "
                     "same command, one after the other, and read back from the `--rows` file.")  # fmt: skip
    lines += ["", f"Command: `{result['command']}`"]
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work", default="/tmp/pbd_data_scale", help="Where videos go.")
    parser.add_argument("--sets", default="8,32,128")
    parser.add_argument("--unique", type=int, default=4, help="Videos rendered (128: all).")
    parser.add_argument("--min-duration", type=float, default=120.0, help="Seconds.")
    parser.add_argument("--max-duration", type=float, default=360.0, help="Seconds.")
    parser.add_argument("--train-steps", type=int, default=0, help="0: the whole epoch.")
    parser.add_argument("--eval-windows", type=int, default=0, help="0: every window.")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--window", type=int, default=32)
    parser.add_argument("--rows", help="JSON-lines file of finished measurements: appended to, "
                        "and rows already in it (same options) are not measured again.")  # fmt: skip
    parser.add_argument("--measure", nargs=2, metavar=("DATA", "MODE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(*args.measure, args)))
        return
    work = Path(args.work)
    rendered = render(work, args)
    sizes = [int(s) for s in args.sets.split(",")]
    runs = [(n, "stream") for n in sizes] + [(sizes[0], "old")]
    rows, done_rows = [], {}
    if args.rows and Path(args.rows).is_file():
        for line in Path(args.rows).read_text().splitlines():
            row = json.loads(line)
            done_rows[(row["videos"], row["mode"])] = row
    for count, mode in runs:
        if (count, mode) in done_rows:
            rows.append({**done_rows[(count, mode)], "earlier_run": True})
            continue
        data = build_set(work, rendered, count, args.unique)
        cmd = [sys.executable, __file__, *sys.argv[1:], "--measure", str(data), mode]
        done = subprocess.run(cmd, capture_output=True, text=True, env=os.environ)
        if done.returncode:
            sys.exit(done.stderr[-3000:])
        rows.append(json.loads(done.stdout.splitlines()[-1]))
        print(json.dumps(rows[-1]), flush=True)
        if args.rows:
            with open(args.rows, "a") as f:
                f.write(json.dumps(rows[-1]) + "\n")
    result = {
        "machine": describe_machine(),
        "args": {k: v for k, v in vars(args).items() if k not in ("measure", "work", "rows")},
        "command": "python benchmarks/data_scale.py " + " ".join(sys.argv[1:]),
        "rows": rows,
    }
    save_results("data_scale", result, markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
