"""Progressive Block Drop: score, drop, recover with cross-depth alignment, merge; repeat.

`progressive_block_drop(model, data, config)` is the library call behind
`pbd-deploy compress`; `compress_model_dir` adds the model directory, the report and the
resumable state around it. See docs/compress.md.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import os
import time
from datetime import datetime, timezone

import numpy as np
import torch

from pbd_deploy.compress.align import AlignWeights, alignment_loss
from pbd_deploy.compress.blocks import drop_block, list_blocks
from pbd_deploy.compress.budget import Budget, plan_budget
from pbd_deploy.compress.config import BlockDropConfig
from pbd_deploy.compress.importance import best_candidates, score_candidates
from pbd_deploy.compress.lora import check_targets, inject_adapters, merge_adapters
from pbd_deploy.compress.report import report_json, report_markdown, report_plot
from pbd_deploy.compress.state import RunState, cpu_state, fingerprint
from pbd_deploy.core.atomic import output_lock, prepare_output
from pbd_deploy.data import distributed
from pbd_deploy.data.dataset import TadDataset
from pbd_deploy.eval.inference import Progress, evaluate_model
from pbd_deploy.models.complexity import count_macs, count_params
from pbd_deploy.models.detector import Detector
from pbd_deploy.models.io import CONFIG_FILE, add_history, load_model, save_model
from pbd_deploy.train import TrainConfig, Trainer

log = logging.getLogger(__name__)


def compress_model_dir(
    model_dir,
    data_dir,
    out_dir,
    config: BlockDropConfig,
    force: bool = False,
    resume: bool = False,
    progress: Progress | None = None,
) -> dict:
    """`pbd-deploy compress`: load, compress, and write the model directory with its report.

    The resumable state lives beside the output (`OUT.pbd-state.pt`) until the run ends.
    Returns:
        The report (also written as OUT/report.json, report.md and report.png).
    """
    out = prepare_output(out_dir, force, marker=CONFIG_FILE)
    model = load_model(model_dir)
    dataset = TadDataset(data_dir, model.config, config.past_end, subsets=config.subsets)
    state_file = out.with_name(out.name + ".pbd-state.pt")
    main = os.environ.get("RANK", "0") == "0"  # torchrun: rank 0 holds the lock and writes
    with output_lock(out) if main else contextlib.nullcontext():
        student, report = progressive_block_drop(
            model, dataset, config, progress, state_file, resume
        )
        report["source"] = {"model": str(model_dir), "data": str(data_dir)}
        if distributed.is_main():
            extra = {
                "report.json": report_json(report),
                "report.md": report_markdown(report),
                "report.png": report_plot(report),
            }
            save_model(student, out, force, extra=extra)
            state_file.unlink(missing_ok=True)
        distributed.barrier()
    return report


def progressive_block_drop(
    model: Detector,
    data,
    config: BlockDropConfig,
    progress: Progress | None = None,
    state_file=None,
    resume: bool = False,
) -> tuple[Detector, dict]:
    """Compress `model` by dropping whole backbone blocks, recovering after each drop.

    Args:
        model: the trained detector (the teacher; left unchanged).
        data: a dataset directory or a TadDataset: the training split's calibration part
            scores blocks, the training split trains, the validation split selects; the
            test split is never read.
        state_file: where to keep the resumable state (None: keep it in memory only).
    Returns:
        The compressed detector (adapters merged, blocks physically removed, history in its
        config) and the report: baseline, one record per iteration, and why it stopped.
    """
    run = _BlockDrop(model, data, config, progress, state_file, resume)
    return run.run()


class Recovery:
    """Recovery after a compression step, shared by block drop and channel pruning.

    LoRA (peft) on the kept blocks + cross-depth alignment to the frozen teacher, the best
    epoch on the validation split (epoch 0, no recovery, competes too), adapters merged.
    A subclass sets `config` (a RecoveryConfig), `teacher`, `dataset`, `calibration`,
    `device`, `progress`, `state` (a RunState whose `iterations` count seeds the epochs)
    and `_started` (the wall-clock start of the step) before calling `_recover`.
    """

    def _recovery_epochs(self, pending: dict) -> int:
        return self.config.epochs

    def _recover(self, student: Detector, pending: dict) -> tuple[Detector, dict]:
        """LoRA + cross-depth alignment for `epochs`; best-on-val kept, adapters merged."""
        epochs = self._recovery_epochs(pending)
        if epochs == 0:
            return student, {"val_mAP": pending["val_mAP_before"], "epochs": [], "best_epoch": 0}
        torch.manual_seed(self.config.seed + len(self.state.data["iterations"]))
        wrapped = inject_adapters(
            student, self.config.lora_targets, self.config.lora_rank, self.config.lora_alpha
        )
        trainer = Trainer(
            distributed.data_parallel(student),
            self.dataset,
            self._train_config(epochs),
            loss_fn=lambda m, *batch: alignment_loss(m, self.teacher, self._weights(), *batch),
        )
        self._restore(student, trainer, pending)
        for epoch in range(pending["epoch"] + 1, epochs + 1):
            self._epoch(student, trainer, pending, epoch, epochs)
        student.load_state_dict(pending["best"])
        merged, error = merge_adapters(wrapped, self._example())
        figures = {
            "val_mAP": pending["best_val_mAP"],
            "best_epoch": pending["best_epoch"],
            "epochs": pending["epochs"],
            "merge_error": error,
        }
        return merged.eval(), figures

    def _epoch(self, student, trainer: Trainer, pending: dict, epoch: int, epochs: int) -> None:
        # Each epoch is seeded by (seed, iteration, epoch), so a resumed run repeats it exactly.
        iteration = len(self.state.data["iterations"]) + 1
        rng = np.random.default_rng([self.config.seed, iteration, epoch])
        torch.manual_seed(int(rng.integers(2**31)))
        losses = trainer.epoch(rng, epoch, self.progress)
        scored = trainer.scored  # the EMA weights when the recipe keeps them
        val = self._val_map(scored)
        record = {"epoch": epoch, **losses, "val_mAP": val}
        pending["epochs"].append(record)
        if self.progress:
            self.progress(f"recover {iteration}", epoch, epochs, **record)
        if val > pending["best_val_mAP"]:
            pending.update(best_val_mAP=val, best_epoch=epoch, best=cpu_state(scored))
        pending.update(
            epoch=epoch,
            wall_s=time.time() - self._started,
            current=cpu_state(student),
            ema=cpu_state(trainer.ema) if trainer.ema is not None else None,
            optimizer=trainer.optimizer.state_dict(),
            step=trainer.step,
        )
        self.state.save()

    def _restore(self, student: Detector, trainer: Trainer, pending: dict) -> None:
        """Start recovery, or continue it from the last saved epoch."""
        if "current" in pending:
            student.load_state_dict(pending["current"])
            trainer.optimizer.load_state_dict(pending["optimizer"])
            trainer.step = pending["step"]
            if trainer.ema is not None:
                trainer.ema.load_state_dict(pending["ema"])
            return
        # Epoch 0 (adapters at zero = the dropped model) competes too: recovery that does not
        # help on val is not kept.
        pending.update(
            epoch=0,
            epochs=[],
            best_val_mAP=pending["val_mAP_before"],
            best_epoch=0,
            best=cpu_state(student),
        )

    # -- helpers ----------------------------------------------------------------------

    def _weights(self) -> AlignWeights:
        c = self.config
        return AlignWeights(feat=c.w_feat, cls=c.w_cls, reg=c.w_reg, temperature=c.temperature)

    def _train_config(self, epochs: int) -> TrainConfig:
        c = self.config
        return TrainConfig.from_recipe(  # the recipe adds EMA, decay groups, augmentations
            c.recipe,
            epochs=epochs,
            batch_size=c.batch_size,
            lr=c.lr,
            weight_decay=c.weight_decay,
            warmup_epochs=c.warmup_epochs,
            windows_per_video=c.windows_per_video,
            device=self.device,
            seed=c.seed,
            workers=c.workers,
            precision=c.precision,
            checkpointing=c.checkpointing,
        )

    def _val_map(self, model: Detector) -> float:
        training = model.training
        result, _ = evaluate_model(
            model, self.dataset, "val", device=self.device, workers=self.config.workers
        )
        model.train(training)
        return result.average_mAP

    def _measure(self, model: Detector) -> dict:
        macs = count_macs(model.config)
        return {
            "kept_blocks": list_blocks(model),
            "macs": macs["total"],
            "macs_backbone": macs["backbone"],
            "params": count_params(model),
        }

    def _example(self) -> torch.Tensor:
        """A real calibration window, to check the merged model against the adapted one."""
        video = self.calibration[0]
        _, x, _ = next(self.dataset.sliding_windows(video))
        return torch.from_numpy(x)[None].to(self.device)


class _BlockDrop(Recovery):
    """One compression run; the methods are its phases."""

    def __init__(self, model, data, config: BlockDropConfig, progress, state_file, resume):
        self.config, self.progress = config, progress
        self.device = distributed.setup(config.device)
        self.teacher = copy.deepcopy(model).to(self.device).eval().requires_grad_(False)
        if not isinstance(data, TadDataset):
            data = TadDataset(data, model.config, config.past_end, subsets=config.subsets)
        self.dataset = data
        self.budget: Budget = plan_budget(model.config, config)
        # Fail now when a split is missing, not after an hour of scoring.
        self.calibration = self.dataset.annotations.calibration_split(config.calib_fraction)
        self.dataset.split("val")
        check_targets(model, config.lora_targets)  # before the state file is written
        options = {**config.to_dict(), "model": fingerprint(model)}
        self.state = RunState.open(state_file, options, resume)
        self.student = self._rebuild()

    # -- the loop ---------------------------------------------------------------------

    def run(self) -> tuple[Detector, dict]:
        data = self.state.data
        if data["baseline"] is None:
            data["baseline"] = {
                "iteration": 0,
                **self._measure(self.teacher),
                "val_mAP": self._val_map(self.teacher),
            }
            self.state.save()
        while not data.get("stopped") and self._remaining() > 0:
            self._iteration()
        report = {
            "baseline": data["baseline"],
            "iterations": data["iterations"],
            "stopped": data.get("stopped"),
            "kept_blocks": list_blocks(self.student),
            "config": self.config.to_dict(),
        }
        return self.student.cpu().eval(), report

    def _remaining(self) -> int:
        return self.budget.remaining(self.student.config, self.state.data["dropped"])

    def _iteration(self) -> None:
        data = self.state.data
        pending = data["pending"]
        if pending is None:
            pending = data["pending"] = self._score()
            self.state.save()
        self._started = started = time.time() - pending["wall_s"]
        before = self.student
        student = before
        for index in pending["chosen"]:
            student = drop_block(student, index)
        pending.setdefault("val_mAP_before", self._val_map(student))
        student, recovery = self._recover(student, pending)
        record = {
            "iteration": len(data["iterations"]) + 1,
            "dropped": pending["chosen"],
            "criterion": self.config.criterion if pending["scores"] else "given",
            "scores": pending["scores"],
            "score_s": pending["score_s"],
            "val_mAP_before": pending["val_mAP_before"],
            **recovery,
            **self._measure(student),
            "wall_s": round(time.time() - started, 1),
            "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        log.info("iteration %d: %s", record["iteration"], record)
        self._finish(before, student, record)

    def _finish(self, before: Detector, student: Detector, record: dict) -> None:
        """Keep the iteration, or stop and keep `before` when it lost too much val mAP."""
        data = self.state.data
        limit = self.config.max_map_drop
        lost = data["baseline"]["val_mAP"] - record["val_mAP"]
        data["iterations"].append(record)
        data["pending"] = None
        if limit is not None and lost > limit:
            record["kept"] = False
            data["stopped"] = (
                f"dropping {record['dropped']} lost {100 * lost:.2f} val mAP points after "
                f"recovery (limit {100 * limit:.2f}); kept the model before it"
            )
        else:
            record["kept"] = True
            data["dropped"] = data["dropped"] + record["dropped"]
            data["weights"] = cpu_state(student)
            self.student = student
            add_history(self.student, "compress", **_history_entry(record))
        self.state.save()

    # -- phases -----------------------------------------------------------------------

    def _score(self) -> dict:
        """Choose this iteration's block(s); scores only when the user did not name them."""
        started = time.time()
        count = self._remaining() if self._one_shot() else 1
        scores, ranked = {}, []
        if self.budget.indices is None:
            scores = score_candidates(
                self.student,
                self.dataset,
                self.calibration,
                self.config.criterion,
                teacher=self.teacher,
                batch_size=self.config.batch_size,
                device=self.device,
                thresholds=self.student.config.thresholds,
                progress=self.progress,
            )
            ranked = best_candidates(scores, self.config.criterion, len(scores))
        chosen = self.budget.select(self.student.config, ranked, self.state.data["dropped"], count)
        elapsed = round(time.time() - started, 1)
        return {"chosen": chosen, "scores": scores, "score_s": elapsed, "wall_s": elapsed}

    # -- helpers ----------------------------------------------------------------------

    def _rebuild(self) -> Detector:
        """The student after the finished iterations (the teacher when none finished)."""
        student = self.teacher
        for index in self.state.data["dropped"]:
            student = drop_block(student, index)
        student = copy.deepcopy(student).requires_grad_(True)
        if self.state.data["weights"] is not None:
            student.load_state_dict(self.state.data["weights"])
        for record in self.state.data["iterations"]:
            if record.get("kept"):
                add_history(student, "compress", **_history_entry(record))
        return student.to(self.device)

    def _one_shot(self) -> bool:
        return self.config.schedule == "one-shot"

    def _recovery_epochs(self, pending: dict) -> int:
        return self.config.epochs * (len(pending["chosen"]) if self._one_shot() else 1)


def _history_entry(record: dict) -> dict:
    """The per-iteration figures kept in config.json (the per-epoch log is in report.json)."""
    keys = (
        "iteration", "dropped", "criterion", "scores", "macs", "macs_backbone", "params",
        "val_mAP_before", "val_mAP", "best_epoch", "wall_s", "time",
    )  # fmt: skip
    return {k: record[k] for k in keys if k in record}
