"""INT8 variant by explicit quantization: a QDQ ONNX calibrated on the dataset.

onnxruntime.quantization's static QDQ with per-channel, symmetric weights and symmetric
activations (zero point 0, what TensorRT's explicit quantization accepts), biases left in
fp32 (TensorRT accepts no INT32 Q/DQ). TensorRT then
builds INT8 kernels from the Q/DQ nodes; the deprecated implicit calibrator is not used.
Q/DQ pairs go only on the inputs of MatMul, Gemm and Conv (TensorRT's placement guidance):
quantizing everything also quantizes the attention band mask (large negative values that
swamp an int8 scale) and the output probabilities, and took the tiny model's test mAP from
69.1 to 2.2; GEMM/conv-only kept it at 70.1.
Calibration windows come from the calibration split, a part of the training split, so
the test split never influences the quantization scales.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Iterable

import numpy as np

from pbd_deploy.errors import PbdError

log = logging.getLogger(__name__)

QUANTIZED_OPS = ("MatMul", "Gemm", "Conv")


def calibration_windows(dataset, limit: int, fraction: float = 0.1) -> list[np.ndarray]:
    """Up to `limit` sliding-window model inputs from the dataset's calibration split.

    Args:
        dataset: a TadDataset.
        limit: most windows to return.
        fraction: share of the training videos in the calibration split.
    """
    try:
        videos = dataset.annotations.calibration_split(fraction)
    except PbdError as exc:
        raise PbdError(f"no calibration data in {dataset.root}: {exc}") from None
    windows = []
    for video in videos:
        for _, x, _ in dataset.sliding_windows(video):
            windows.append(x)
            if len(windows) >= limit:
                return windows
    return windows


class _Reader:
    """CalibrationDataReader over model inputs, `batch` windows per sample."""

    def __init__(self, names: list[str], windows: list[np.ndarray], batch: int, valid):
        batches = [windows[i : i + batch] for i in range(0, len(windows), batch)]
        # A static batch needs full batches: pad the last one by repeating its last window.
        batches = [b + [b[-1]] * (batch - len(b)) for b in batches]
        items = [{names[0]: np.stack(b).astype(np.float32)} for b in batches]
        if len(names) > 1:  # a masked model's "valid": the windows are fed as full ones
            for item in items:
                item[names[1]] = np.full(batch, valid, dtype=np.int64)
        self._items = iter(items)

    def get_next(self):
        return next(self._items, None)

    def rewind(self):  # some ORT versions call it; a single pass is all we need
        pass


def quantize_int8(
    src: str | Path, dst: str | Path, windows: Iterable[np.ndarray], batch: int,
    valid: int | None = None,
) -> dict:  # fmt: skip
    """Write the QDQ INT8 model of `src` to `dst`, calibrated on `windows`.

    `valid`: a masked model's (second input "valid") head length: the windows are fed as
    full ones.

    Returns:
        {"calibration_windows": count, "quantized_nodes": QuantizeLinear count}.
    """
    import onnx
    from onnxruntime.quantization import CalibrationDataReader

    windows = list(windows)
    if not windows:
        raise PbdError("no calibration windows: the calibration split has no videos; add some")
    names = [i.name for i in onnx.load(str(src), load_external_data=False).graph.input]
    reader = type("Reader", (_Reader, CalibrationDataReader), {})(names, windows, batch, valid)
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # ORT logs "consider pre-processing" on the root logger
    try:
        _quantize(src, dst, reader)
    finally:
        root.setLevel(level)
    graph = onnx.load(str(dst), load_external_data=False).graph
    nodes = sum(n.op_type == "QuantizeLinear" for n in graph.node)
    log.info("int8: %d QuantizeLinear nodes from %d windows", nodes, len(windows))
    return {"calibration_windows": len(windows), "quantized_nodes": nodes}


def _has_external_data(path) -> bool:
    from pbd_deploy.export.onnx import data_file

    return data_file(path).is_file()


def _quantize(src, dst, reader) -> None:
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    quantize_static(
        str(src),
        str(dst),
        reader,
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        activation_type=QuantType.QInt8,
        weight_type=QuantType.QInt8,
        calibrate_method=CalibrationMethod.MinMax,
        # a model saved with external data (over 2 GB) is quantized into dst + dst.data
        use_external_data_format=_has_external_data(src),
        op_types_to_quantize=list(QUANTIZED_OPS),
        extra_options={
            "ActivationSymmetric": True,
            "WeightSymmetric": True,
            # ORT's default quantizes Conv/Gemm biases to INT32 Q/DQ; TensorRT's ONNX parser
            # takes only INT8/FP8/INT4 quantized tensors and refuses the file (onnx-tensorrt,
            # NVIDIA/TensorRT#4542). TensorRT fuses an fp32 bias into the INT8 kernel itself.
            "QuantizeBias": False,
        },
    )
