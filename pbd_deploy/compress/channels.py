"""Channel pruning: remove attention heads and MLP hidden units of the kept blocks.

`prune_channels(model, data, config)` is the library call behind `pbd-deploy prune`;
`prune_model_dir` adds the model directory, the report and the resumable state. One step:
check the budget, score heads and units on the calibration split (channel_importance.py,
Torch-Pruning's estimators), cut the weights physically (smaller Linear layers; config.json
records every block's heads and MLP width), then recover exactly as `compress` does (the
shared `Recovery`: the input model as teacher, LoRA + cross-depth alignment, best epoch on
val, adapters merged). Works before or after block drop: blocks keep their original indices.
"""

from __future__ import annotations

import contextlib
import copy
import math
import os
import time
from datetime import datetime, timezone

import numpy as np
import torch

from pbd_deploy.compress.channel_importance import channel_importance
from pbd_deploy.compress.config import ChannelPruneConfig
from pbd_deploy.compress.pbd import Recovery
from pbd_deploy.compress.report import report_json
from pbd_deploy.compress.state import RunState, cpu_state, fingerprint
from pbd_deploy.core.atomic import output_lock, prepare_output
from pbd_deploy.data import distributed
from pbd_deploy.data.dataset import TadDataset
from pbd_deploy.errors import PbdError
from pbd_deploy.eval.inference import Progress
from pbd_deploy.models.complexity import count_macs
from pbd_deploy.models.detector import Detector, DetectorConfig
from pbd_deploy.models.io import CONFIG_FILE, add_history, load_model, load_state, save_model


def widths(config: DetectorConfig) -> tuple[list[int], list[int]]:
    """Heads and MLP hidden units of each kept block."""
    bb = config.backbone
    positions = range(len(bb.block_indices))
    return [bb.heads_at(p) for p in positions], [bb.mlp_dim(p) for p in positions]


def unit_macs(config: DetectorConfig) -> tuple[int, int]:
    """MACs per window of one head and of one MLP unit (the same in every block: blocks
    share the token count and width), measured by adding one to block 0."""
    base = count_macs(config)["total"]
    heads, units = widths(config)
    out = []
    for name, values in (("block_heads", heads), ("mlp_dims", units)):
        more = copy.deepcopy(config)
        setattr(more.backbone, name, [values[0] + 1] + values[1:])
        more.backbone.head_dim = config.backbone.attn_dim // config.backbone.heads
        out.append(count_macs(more)["total"] - base)
    return out[0], out[1]


def plan_widths(config: DetectorConfig, options: ChannelPruneConfig) -> tuple[list[int], list[int]]:
    """Heads and MLP units to keep in each block; PbdError if the budget cannot be met.

    With global allocation (not `uniform`) only the totals count: channel_importance decides
    which blocks keep them. Every head costs the same MACs in every block (and every unit),
    so both allocations leave the same MACs.
    """
    if config.backbone is None:
        raise PbdError("prune needs a model with a backbone; feature-mode models have no blocks")
    heads, units = widths(config)
    blocks, dim = len(heads), config.backbone.dim
    if options.target_macs is None:
        keep_h = heads if options.heads is None else [options.heads] * blocks
        keep_u = units
        if options.mlp_ratio is not None:
            hidden = dim * options.mlp_ratio
            if abs(hidden - round(hidden)) > 1e-6:
                raise PbdError(
                    f"--mlp-ratio {options.mlp_ratio} times the width {dim} is {hidden:g}, not "
                    "a whole number of units; choose a ratio that divides evenly"
                )
            keep_u = [int(round(hidden))] * blocks
        _check_within(keep_h, heads, "--heads", "heads", options.uniform)
        _check_within(keep_u, units, "--mlp-ratio", "MLP units", options.uniform)
        return keep_h, keep_u
    per_head, per_unit = unit_macs(config)
    total = count_macs(config)["total"]
    remove = total - options.target_macs * total  # MACs that must go
    fraction = remove / (per_head * sum(heads) + per_unit * sum(units))
    cut_h = round(fraction * sum(heads) / blocks)  # per block, the same share of both kinds
    left = remove - per_head * cut_h * blocks
    cut_u = max(0, math.ceil(left / (per_unit * blocks)))  # units make up the rest exactly
    keep_h, keep_u = [h - cut_h for h in heads], [u - cut_u for u in units]
    if min(keep_h) < 1 or min(keep_u) < 1:
        kind = "head" if min(keep_h) < 1 else "MLP unit"
        raise PbdError(
            f"--target-macs {options.target_macs} would remove every {kind} of a block; "
            "raise the target (or drop blocks with compress)"
        )
    return keep_h, keep_u


def _check_within(keep: list[int], have: list[int], option: str, kind: str, uniform: bool):
    if uniform and any(k > h for k, h in zip(keep, have)):
        raise PbdError(
            f"{option} keeps {keep[0]} {kind} per block, but a block has only {min(have)}"
        )
    if sum(keep) > sum(have):
        raise PbdError(f"{option} keeps {keep[0]} {kind} per block, more than the model has")


def allocate(scores: list[list[float]], keep: list[int], uniform: bool) -> list[list[int]]:
    """Indices kept in each block: the most important `keep[p]` of block p (uniform), or the
    most important sum(keep) over all blocks, at least one per block (global)."""
    if uniform:
        return [sorted(_ranked(s)[:k]) for s, k in zip(scores, keep)]
    kept = [[_ranked(s)[0]] for s in scores]  # every block keeps its best channel
    rest = [(-s[i], p, i) for p, s in enumerate(scores) for i in _ranked(s)[1:]]
    for _, p, i in sorted(rest)[: sum(keep) - len(scores)]:
        kept[p].append(i)
    return [sorted(k) for k in kept]


def _ranked(values) -> list[int]:
    """Indices from most to least important (ties: the lower index first)."""
    return [int(i) for i in np.argsort(-np.asarray(values, dtype=np.float64), kind="stable")]


@torch.no_grad()
def prune_widths(model: Detector, heads: list[list[int]], units: list[list[int]]) -> Detector:
    """A copy of `model` keeping only `heads[p]` / `units[p]` (indices) of block p.

    Cut by the known structure: head h owns rows h*d:(h+1)*d of q, k and v in the fused qkv
    weight, the same entries of q_bias and v_bias, and those input columns of proj; unit u
    owns row u of fc1 (and its bias) and input column u of fc2. The copy is rebuilt from its
    config, so module shapes and config.json always agree.
    """
    config = copy.deepcopy(model.config)
    bb = config.backbone
    head_dim = bb.attn_dim // bb.heads
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    for p, (kept_heads, kept_units) in enumerate(zip(heads, units)):
        pre = f"backbone.blocks.{p}."
        inner = bb.heads_at(p) * head_dim
        ch = torch.tensor([h * head_dim + d for h in kept_heads for d in range(head_dim)])
        rows = torch.cat([ch, ch + inner, ch + 2 * inner])  # q, k, v
        u = torch.tensor(kept_units)
        for key, index, dim in (
            ("attn.qkv.weight", rows, 0), ("attn.q_bias", ch, 0), ("attn.v_bias", ch, 0),
            ("attn.proj.weight", ch, 1), ("mlp.fc1.weight", u, 0), ("mlp.fc1.bias", u, 0),
            ("mlp.fc2.weight", u, 1),
        ):  # fmt: skip
            state[pre + key] = state[pre + key].index_select(dim, index).contiguous()
    bb.head_dim, bb.block_heads, bb.mlp_dims = (
        head_dim,
        [len(h) for h in heads],
        [len(u) for u in units],
    )
    pruned = Detector(config)
    load_state(pruned, state, "the pruned weights")
    return pruned.eval()


def prune_channels(
    model: Detector,
    data,
    config: ChannelPruneConfig,
    progress: Progress | None = None,
    state_file=None,
    resume: bool = False,
) -> tuple[Detector, dict]:
    """Prune heads and MLP units of `model`'s kept blocks, then recover.

    Args:
        model: the trained detector (the teacher; left unchanged).
        data: a dataset directory or a TadDataset: the calibration part of the training
            split scores channels, the training split trains, the validation split selects;
            the test split is never read.
        state_file: where to keep the resumable state (None: in memory only).
    Returns:
        The pruned detector (smaller weights, widths and a `prune` entry in its config
        history) and the report: baseline, the pruning record, importance scores.
    """
    return _ChannelPrune(model, data, config, progress, state_file, resume).run()


class _ChannelPrune(Recovery):
    """One pruning run; its state has at most one record in `iterations`."""

    def __init__(self, model, data, config: ChannelPruneConfig, progress, state_file, resume):
        self.config, self.progress = config, progress
        self.keep = plan_widths(model.config, config)  # fails before any work
        self.device = distributed.setup(config.device)
        self.teacher = copy.deepcopy(model).to(self.device).eval().requires_grad_(False)
        if not isinstance(data, TadDataset):
            data = TadDataset(data, model.config, config.past_end, subsets=config.subsets)
        self.dataset = data
        self.calibration = self.dataset.annotations.calibration_split(config.calib_fraction)
        self.dataset.split("val")
        options = {**config.to_dict(), "model": fingerprint(model)}
        self.state = RunState.open(state_file, options, resume)

    def run(self) -> tuple[Detector, dict]:
        data = self.state.data
        if data["baseline"] is None:
            data["baseline"] = {
                **self._measure(self.teacher),
                "val_mAP": self._val_map(self.teacher),
            }
            self.state.save()
        if not data["iterations"]:
            self._prune()
        record = data["iterations"][0]
        student = prune_widths(self.teacher, record["kept_heads"], record["kept_units"])
        student.load_state_dict(data["weights"])
        add_history(student, "prune", **_history_entry(record))
        report = {
            "baseline": data["baseline"],
            "prune": record,
            "importance": data["importance"],
            "config": self.config.to_dict(),
        }
        return student.eval(), report

    def _prune(self) -> None:
        data = self.state.data
        pending = data["pending"]
        if pending is None:
            started = time.time()
            scores = channel_importance(
                self.teacher, self.dataset, self.calibration, self.config.importance,
                self.config.calib_windows, self.config.batch_size, self.device,
            )  # fmt: skip
            heads = allocate(scores["heads"], self.keep[0], self.config.uniform)
            units = allocate(scores["units"], self.keep[1], self.config.uniform)
            elapsed = round(time.time() - started, 1)
            pending = data["pending"] = {
                "chosen": [], "kept_heads": heads, "kept_units": units,
                "score_s": elapsed, "wall_s": elapsed,
            }  # fmt: skip
            data["importance"] = scores
            self.state.save()
        self._started = time.time() - pending["wall_s"]
        student = prune_widths(self.teacher, pending["kept_heads"], pending["kept_units"])
        student = student.to(self.device).requires_grad_(True)
        pending.setdefault("val_mAP_before", self._val_map(student))
        student, recovery = self._recover(student, pending)
        heads, units = widths(student.config)
        record = {
            "importance": self.config.importance,
            "allocation": "uniform" if self.config.uniform else "global",
            "kept_heads": pending["kept_heads"],
            "kept_units": pending["kept_units"],
            "block_heads": heads,
            "mlp_dims": units,
            "score_s": pending["score_s"],
            "val_mAP_before": pending["val_mAP_before"],
            **recovery,
            **self._measure(student),
            "wall_s": round(time.time() - self._started, 1),
            "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        data["iterations"] = [record]
        data["weights"] = cpu_state(student)
        data["pending"] = None
        self.state.save()


def _history_entry(record: dict) -> dict:
    """The figures kept in config.json (per-epoch logs and scores stay in report.json)."""
    keys = (
        "importance", "allocation", "block_heads", "mlp_dims", "kept_heads", "macs",
        "macs_backbone", "params", "val_mAP_before", "val_mAP", "best_epoch", "wall_s", "time",
    )  # fmt: skip
    return {k: record[k] for k in keys if k in record}


def prune_markdown(report: dict) -> str:
    """A short table: before and after, MACs, params, val mAP, widths."""
    base, r = report["baseline"], report["prune"]
    return "\n".join([
        "# Channel pruning report",
        "",
        f"Importance `{r['importance']}` ({r['allocation']} allocation), "
        f"{report['config']['epochs']} recovery epochs, best epoch {r['best_epoch']}.",
        f"Heads per block: {r['block_heads']}; MLP units per block: {r['mlp_dims']}.",
        "",
        "| model | GMACs | MACs kept | params (M) | val mAP (%) |",
        "|---|---|---|---|---|",
        f"| input | {base['macs'] / 1e9:.3f} | 1.000 | {base['params'] / 1e6:.3f} "
        f"| {100 * base['val_mAP']:.2f} |",
        f"| pruned, before recovery | {r['macs'] / 1e9:.3f} | {r['macs'] / base['macs']:.3f} "
        f"| {r['params'] / 1e6:.3f} | {100 * r['val_mAP_before']:.2f} |",
        f"| pruned, recovered | {r['macs'] / 1e9:.3f} | {r['macs'] / base['macs']:.3f} "
        f"| {r['params'] / 1e6:.3f} | {100 * r['val_mAP']:.2f} |",
        "",
    ])  # fmt: skip


def prune_model_dir(
    model_dir,
    data_dir,
    out_dir,
    config: ChannelPruneConfig,
    force: bool = False,
    resume: bool = False,
    progress: Progress | None = None,
) -> dict:
    """`pbd-deploy prune`: load, prune, recover, and write the model directory + report.

    The resumable state lives beside the output (`OUT.prune-state.pt`) until the run ends.
    """
    out = prepare_output(out_dir, force, marker=CONFIG_FILE)
    model = load_model(model_dir)
    plan_widths(model.config, config)  # bad budgets fail before the dataset is read
    dataset = TadDataset(data_dir, model.config, config.past_end, subsets=config.subsets)
    state_file = out.with_name(out.name + ".prune-state.pt")
    main = os.environ.get("RANK", "0") == "0"  # torchrun: rank 0 holds the lock and writes
    with output_lock(out) if main else contextlib.nullcontext():
        pruned, report = prune_channels(model, dataset, config, progress, state_file, resume)
        report["source"] = {"model": str(model_dir), "data": str(data_dir)}
        if distributed.is_main():
            extra = {"report.json": report_json(report), "report.md": prune_markdown(report)}
            save_model(pruned, out, force, extra=extra)
            state_file.unlink(missing_ok=True)
        distributed.barrier()
    return report
