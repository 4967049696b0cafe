"""`pbd-deploy export`: model directory -> model.onnx + model.json (+ variants, engine or script).

Every figure the export measures (parity, mAP of each variant) is written to model.json
and returned, so what ships carries the evidence that it matches the torch model.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
from pathlib import Path
from typing import Callable

from pbd_deploy.core.atomic import output_lock, prepare_output, write_atomically, write_file
from pbd_deploy.core.postprocessors import postprocess_to_dict
from pbd_deploy.errors import PbdError
from pbd_deploy.export import parity
from pbd_deploy.export.config import ExportConfig
from pbd_deploy.export.onnx import (
    OUTPUT_NAMES,
    VALID_NAME,
    check_window,
    export_onnx,
    input_name,
)
from pbd_deploy.models.io import CONFIG_FILE, WEIGHTS_FILE, load_model
from pbd_deploy.runtime import artifact

log = logging.getLogger(__name__)
Progress = Callable[..., None]


def source_hash(model_dir: Path) -> str:
    """sha256 over config.json and model.safetensors: which model an export came from."""
    parts = [artifact.file_sha256(model_dir / f) for f in (CONFIG_FILE, WEIGHTS_FILE)]
    return hashlib.sha256("".join(parts).encode()).hexdigest()


def with_window(model, window: int):
    """The model with its input window set to `window` (the stride follows a default one)."""
    inp = model.config.input
    if window == inp.window:
        return model
    model = copy.deepcopy(model)
    inp = model.config.input
    default_stride = inp.stride == max(1, inp.window * 3 // 4)
    inp.window = window
    inp.stride = max(1, window * 3 // 4) if default_stride else min(inp.stride, window)
    return model


def io_spec(model, window: int, batch: int, dynamic: bool) -> dict:
    """Input/output names, shapes (names for dynamic axes) and dynamic axes of the graph."""
    inp, n, k = model.config.input, len(model.positions), model.num_classes
    b, t = ("batch", "time") if dynamic else (batch, window)
    shape = [b, inp.feature_dim, t] if model.backbone is None else [b, 3, t, inp.crop, inp.crop]
    return {
        "input": {"name": input_name(model), "shape": shape, "dtype": "float32"},
        "outputs": [
            {"name": OUTPUT_NAMES[0], "shape": [b, n, k], "dtype": "float32"},
            {"name": OUTPUT_NAMES[1], "shape": [b, n, 2], "dtype": "float32"},
        ],
        "dynamic_axes": {"batch": 0, "time": 2} if dynamic else {},
        # a masked model's valid head points per window (OpenTAD's padding mask)
        **(
            {"valid_input": {"name": VALID_NAME, "shape": [b], "dtype": "int64"}}
            if model.masked
            else {}
        ),  # fmt: skip
    }


def _manifest(model, model_dir: Path, config: ExportConfig, window: int) -> dict:
    chunk = model.config.backbone.chunk_frames if model.backbone is not None else 1
    return {
        "format": artifact.FORMAT,
        "version": artifact.VERSION,
        "name": model.config.name,
        "class_names": list(model.config.class_names),
        **io_spec(model, window, config.batch, config.dynamic),
        "opset": config.opset,
        "window": window,
        "batch": config.batch,
        "time_multiple": chunk,
        "kept_blocks": list(model.config.backbone.block_indices) if model.backbone else [],
        "postprocess": postprocess_to_dict(model.config.post),  # what the runtime applies
        "thresholds": list(model.config.thresholds),
        "model_config": model.config.to_dict(),
        "source": {"model_dir": str(model_dir), "sha256": source_hash(model_dir)},
        "export_config": config.to_dict(),
        "files": {},
    }


class _Export:
    """The steps of one export, writing into the temporary directory `out`."""

    def __init__(self, model, model_dir: Path, config: ExportConfig, out: Path):
        self.model, self.config, self.out = model, config, out
        self.window = config.window or model.config.input.window
        self.manifest = _manifest(model, model_dir, config, self.window)
        self.dataset = None
        if config.data:
            from pbd_deploy.data.dataset import TadDataset

            self.dataset = TadDataset(
                config.data, model.config, config.past_end, subsets=config.subsets
            )

    def save(self) -> None:
        (self.out / artifact.MANIFEST).write_text(json.dumps(self.manifest, indent=2) + "\n")

    def add_file(self, name: str, precision: str, **figures) -> None:
        entry = {"sha256": artifact.file_sha256(self.out / name), "precision": precision}
        data = self.out / f"{name}.data"  # external data of a model over 2 GB (export/onnx.py)
        if data.is_file():
            entry["external_data"] = {"file": data.name, "sha256": artifact.file_sha256(data)}
        self.manifest["files"][name] = {**entry, **figures}
        self.save()

    def runtime(self, name: str):
        from pbd_deploy.runtime import Detector

        return Detector(self.out / name, providers=["CPUExecutionProvider"])

    def evaluate(self, name: str | None):
        """(mAP result, predictions) of the torch model (name None) or an exported file."""
        if name is None:
            from pbd_deploy.eval.inference import evaluate_model

            return evaluate_model(self.model, self.dataset, self.config.split)
        from pbd_deploy.runtime.evaluate import evaluate_artifact

        cfg = self.config
        return evaluate_artifact(self.out / name, cfg.data, cfg.split, past_end=cfg.past_end,
                                 subsets=cfg.subsets,
                                 providers=["CPUExecutionProvider"])  # fmt: skip

    def random_inputs(self) -> list:
        """Seeded random inputs: the batch, and one more when the batch axis is dynamic."""
        batches = [self.config.batch] + ([self.config.batch + 1] if self.config.dynamic else [])
        return parity.random_inputs(self.model, batches, self.window)

    def real_inputs(self) -> list:
        """Up to two batches of real windows of the measured split (none without data)."""
        if self.dataset is None:
            return []
        videos = self.dataset.split(self.config.split)
        return parity.real_inputs(self.dataset, videos, self.config.batch, limit=2,
                                  masked=self.model.masked)  # fmt: skip


def _parity(job: _Export) -> dict:
    cfg, model = job.config, job.model
    rt = job.runtime("model.onnx")
    rand = job.random_inputs()
    figures = {"random": parity.output_diff(model, rt, rand)}
    # "Same detections" is core.compare's definition: near-ties may swap, nothing else.
    same = parity.random_input_detections_match(model, rt, rand)
    if job.dataset is not None:
        from pbd_deploy.core.annotations import ground_truth
        from pbd_deploy.core.compare import map_bounds

        figures["real"] = parity.output_diff(model, rt, job.real_inputs())
        torch_result, torch_preds = job.evaluate(None)
        ort_result, ort_preds = job.evaluate("model.onnx")
        match = parity.predictions_match(torch_preds, ort_preds, model.config.post)
        same = same and match.same
        gt = ground_truth(job.dataset.split(cfg.split), model.config.truth_label)
        job.manifest["accuracy"] = {
            "split": cfg.split,
            "torch": torch_result.to_json(),
            "onnx_fp32": ort_result.to_json(),
            "map_diff_fp32": ort_result.average_mAP - torch_result.average_mAP,
            # the most near-tied detections can move it (1e-6 when none swapped)
            "map_diff_bound": map_bounds(match, gt)[1],
        }
    worst = parity.parity_error(figures)
    figures.update(max_abs_diff=worst, detections_same=same, tolerance=cfg.parity_tolerance)
    if worst > cfg.parity_tolerance:
        raise PbdError(
            f"ONNX parity failed: max abs diff {worst:.3g} (scores, or segments per stride; "
            f"tolerance {cfg.parity_tolerance}); this is a bug in the export, please report it"
        )
    if not same:  # numerically at parity, yet more than near-ties differ (core.compare)
        log.warning("detections differ after post-processing despite numeric parity")
    return figures


def _variant_accuracy(job: _Export, name: str) -> dict:
    if job.dataset is None:
        return {}
    try:
        result, _ = job.evaluate(name)
    except PbdError as exc:  # e.g. ORT has no fp16 kernels on this CPU
        return {"mAP": None, "reason": str(exc)}
    base = job.manifest["accuracy"]["onnx_fp32"]["average_mAP"]
    return {"mAP": result.to_json(), "map_diff_vs_fp32": result.average_mAP - base}


def _fp16(job: _Export) -> dict:
    from pbd_deploy.export.fp16 import convert_fp16

    inputs = job.random_inputs() + job.real_inputs()
    info = convert_fp16(job.out / "model.onnx", job.out / "model.fp16.onnx", inputs)
    job.add_file("model.fp16.onnx", "fp16", **info)
    info.update(_variant_accuracy(job, "model.fp16.onnx"))
    job.add_file("model.fp16.onnx", "fp16", **info)
    return info


def _int8(job: _Export) -> dict:
    from pbd_deploy.data.dataset import TadDataset
    from pbd_deploy.export.int8 import calibration_windows, quantize_int8

    calib = TadDataset(
        job.config.calib, job.model.config, job.config.past_end, subsets=job.config.subsets
    )
    windows = calibration_windows(calib, job.config.calib_windows)
    head = job.model.config.head
    info = quantize_int8(job.out / "model.onnx", job.out / "model.int8.onnx", windows,
                         job.config.batch, head.length if head.masked else None)  # fmt: skip
    job.add_file("model.int8.onnx", "int8", **info)
    info.update(_variant_accuracy(job, "model.int8.onnx"))
    job.add_file("model.int8.onnx", "int8", **info)
    return info


def _engine(job: _Export) -> dict:
    """Build model.engine where TensorRT and a GPU are present; always write build_engine.sh.

    The timing cache of a build stays in the user cache of this machine (it is only valid
    for its TensorRT version and GPU); it is never shipped with the export.
    """
    from pbd_deploy.export.tensorrt import build_engine, default_engine_config, local_device
    from pbd_deploy.export.trt_script import build_script

    cfg = job.config
    precision = "int8" if cfg.int8 else "fp16" if cfg.fp16 else "fp32"
    onnx_name = {"fp32": "model.onnx", "fp16": "model.fp16.onnx", "int8": "model.int8.onnx"}
    engine_cfg = default_engine_config(job.manifest, precision, cfg.workspace_gib, cfg.dla_core)
    script = job.out / "build_engine.sh"
    write_file(script, build_script(onnx_name[precision], job.manifest, engine_cfg), True)
    job.manifest["build_engine"] = {"script": script.name, "engine_config": engine_cfg.to_dict()}
    if not cfg.trt:
        return {"built": False, "reason": "--trt not given", "script": script.name}
    try:
        import tensorrt
    except ImportError:
        reason = "TensorRT is not installed here: run build_engine.sh on the target device"
        return {"built": False, "reason": reason, "script": script.name}
    try:
        device = local_device(tensorrt)
    except Exception as exc:  # no CUDA binding, driver or GPU: pycuda and cuda-python differ
        detail = " ".join(str(exc).split())[:160]
        reason = f"TensorRT is installed but no CUDA GPU is usable here ({detail})"
        log.warning("%s; run build_engine.sh on the target device", reason)
        return {"built": False, "reason": reason, "script": script.name}
    meta = build_engine(
        job.out / onnx_name[precision], job.out / "model.engine", engine_cfg, device=device
    )
    return {"built": True, **meta}


def export_model(
    model_dir, out_dir, config: ExportConfig, progress: Progress | None = None, force: bool = False
) -> dict:
    """`pbd-deploy export`: write the export directory and return its figures.

    Args:
        model_dir: a model directory (original, compressed or channel-pruned).
        out_dir: the export directory to create (atomically).
        config: what to produce.
        progress: callback (stage, done, total, **figures).
        force: replace an existing export directory.

    Returns:
        The manifest written to model.json (parity, accuracy, variants, engine).
    """
    model_dir = Path(model_dir)
    prepare_output(out_dir, force, marker=artifact.MANIFEST)
    model = load_model(model_dir)
    window = config.window or model.config.input.window
    check_window(model, window)
    model = with_window(model, window)
    steps = ["onnx", "parity"] + ["fp16"] * config.fp16 + ["int8"] * config.int8 + ["engine"]
    report = progress or (lambda *a, **k: None)
    if config.int8:  # fail on missing calibration data before any work
        from pbd_deploy.data.dataset import TadDataset

        calib = TadDataset(config.calib, model.config, config.past_end, subsets=config.subsets)
        calib.annotations.calibration_split()

    def write(tmp: Path) -> None:
        job = _Export(model, model_dir, config, tmp)
        export_onnx(
            model,
            tmp / "model.onnx",
            window=window,
            batch=config.batch,
            dynamic=config.dynamic,
            opset=config.opset,
        )
        job.add_file("model.onnx", "fp32")
        report("export", 1, len(steps))
        job.manifest["parity"] = _parity(job)
        report("export", 2, len(steps), max_abs_diff=job.manifest["parity"]["max_abs_diff"])
        for name, step in (("fp16", _fp16), ("int8", _int8), ("engine", _engine)):
            if name == "engine" or getattr(config, name):
                job.manifest[name] = step(job)
                job.save()
                report("export", steps.index(name) + 1, len(steps))
        nonlocal manifest
        manifest = job.manifest

    manifest: dict = {}
    with output_lock(out_dir):
        write_atomically(out_dir, write, force, marker=artifact.MANIFEST)
    return manifest
