"""`run_quickstart(out, config)`: the whole pipeline on the embedded default.

synth -> train -> eval -> compress (Progressive Block Drop) -> eval -> export (ONNX, and an
engine or build_engine.sh), each stage through its own library function with its defaults,
so the figures are what a user gets by running the commands one after the other.
`pbd-deploy quickstart` and `benchmarks/quickstart.py` both call it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from pbd_deploy.compress.config import BlockDropConfig
from pbd_deploy.core import config as config_io
from pbd_deploy.data.synthetic import SynthConfig
from pbd_deploy.errors import PbdError
from pbd_deploy.train import TrainConfig

MODEL = "videomae-tiny"


@dataclass
class QuickstartConfig:
    """What `pbd-deploy quickstart` runs: each stage's own config, at its defaults.

    `--epochs` sets `train.epochs`. Python-only: `synth`, `train`, `compress` (as whole
    configs): the quickstart is the embedded default by definition; every other option
    belongs to its stage's own command (synth, train, compress), and tests use tiny ones.
    """

    synth: SynthConfig = field(default_factory=SynthConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    compress: BlockDropConfig = field(default_factory=BlockDropConfig)

    def to_dict(self) -> dict:
        return config_io.to_dict(self)

    @classmethod
    def from_dict(cls, data: dict, where: str = "") -> "QuickstartConfig":
        return config_io.from_dict(cls, data, where)


@dataclass
class QuickstartResult:
    """The figures of every stage, and where its output went.

    Attributes:
        out: the working directory (data/, base/, small/, deploy/ inside).
        train: `train_model_dir`'s summary (best epoch, val mAP, wall time, epochs).
        base: test-split mAP of the trained model.
        compress: `compress_model_dir`'s report (kept blocks, iterations, baseline).
        small: test-split mAP of the compressed model.
        export: the export manifest (its "accuracy" holds the ONNX file's test mAP).
        seconds: wall time of each stage, in the order they ran.
    """

    out: Path
    train: dict
    base: Any  # core.metrics.DetectionResult
    compress: dict
    small: Any
    export: dict
    seconds: dict[str, float]

    @property
    def onnx_average_mAP(self) -> float:
        return self.export["accuracy"]["onnx_fp32"]["average_mAP"]

    @property
    def backbone_macs_kept(self) -> float:
        """Fraction of the base model's backbone MACs that the compressed model keeps."""
        last = self.compress["iterations"][-1]
        return last["macs_backbone"] / self.compress["baseline"]["macs_backbone"]


def run_quickstart(
    out: str | Path,
    config: QuickstartConfig | None = None,
    force: bool = False,
    progress: Callable[..., None] | None = None,
) -> QuickstartResult:
    """Synthesise data, train, compress and export under `out`, scoring each model on test.

    Args:
        out: working directory for data and models.
        config: the stages' configs (default: every stage's defaults).
        force: start over when `out` exists (otherwise it is refused before any work).
        progress: called as `progress(stage, done, total, **figures)`.
    """
    from pbd_deploy.compress import compress_model_dir
    from pbd_deploy.data.synthetic import make_synthetic
    from pbd_deploy.eval.evaluate import evaluate_path
    from pbd_deploy.export import ExportConfig, export_model
    from pbd_deploy.train import train_model_dir

    config = config or QuickstartConfig()
    root = Path(out)
    if root.exists() and not force:
        raise PbdError(f"{root} already exists; pass --force to start over or choose --out")
    seconds: dict[str, float] = {}
    clock = time.perf_counter()

    def lap(stage: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        seconds[stage], clock = now - clock, now

    synth_progress = (lambda d, t: progress("synth", d, t)) if progress else None
    data = make_synthetic(root / "data", config.synth, force=True, progress=synth_progress)
    lap("synth")
    summary = train_model_dir(data, MODEL, root / "base", config.train, True, progress)
    lap("train")
    base = evaluate_path(root / "base", data=data, split="test")
    lap("eval_base")
    report = compress_model_dir(
        root / "base", data, root / "small", config.compress, force=True, progress=progress
    )
    lap("compress")
    small = evaluate_path(root / "small", data=data, split="test")
    lap("eval_small")
    manifest = export_model(
        root / "small", root / "deploy", ExportConfig(data=str(data), trt=True), progress, True
    )
    lap("export")
    return QuickstartResult(root, summary, base, report, small, manifest, seconds)
