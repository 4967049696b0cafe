"""Export a detector to one simplified, checked fp32 ONNX file.

The graph is exactly `Detector.predict`: frames (B, 3, T, H, W) float32, normalised as the
torch model takes them (or features (B, C, T)), in; per-point class probabilities
"scores" (B, N, K) and decoded segments "segments" (B, N, 2) in head points out. NMS stays
outside the graph (numpy, in the runtime), so every backend shares one post-processing.
A masked model (`HeadConfig.masked`, OpenTAD's padding mask) has a second input "valid",
int64 (B,): the head points of each window that hold real input (the rest are masked as
OpenTAD masks them; the head length for a full window).

A model whose weights pass protobuf's 2 GB limit for one message (VideoMAE-H, a large
VideoMAE-L) is saved with ONNX external data: the graph in model.onnx and every tensor in
one model.onnx.data beside it (the `<file>.data` convention of ONNX Runtime's quantizer);
tensors under 1 KiB (shapes, scalars) stay in the graph, where shape inference reads them.
onnxslim runs in memory (an onnxslim too old for that is skipped with a one-line note), and
the checker runs on the file path, the form that supports external data.
"""

from __future__ import annotations

import logging
import tempfile
import warnings
from collections import Counter
from pathlib import Path

import onnx
import onnxslim
import torch
import torch.nn.functional as F
from torch import nn

from pbd_deploy.core.atomic import write_file
from pbd_deploy.core.windows import VALID_NAME  # a masked model's second input
from pbd_deploy.errors import PbdError
from pbd_deploy.models.actionformer import decode_segments
from pbd_deploy.models.detector import Detector

log = logging.getLogger(__name__)

OUTPUT_NAMES = ("scores", "segments")
# Weights above this many bytes go to external data (protobuf refuses messages over 2 GiB;
# the graph itself needs some room). Tests lower it to exercise the path with a tiny model.
EXTERNAL_DATA_BYTES = 2**31 - 2**26


def data_file(path: str | Path) -> Path:
    """model.onnx -> model.onnx.data: where a large model's tensors are stored."""
    path = Path(path)
    return path.with_name(path.name + ".data")


def weight_bytes(model: onnx.ModelProto) -> int:
    """Bytes of the initializers (loaded into the proto) of `model`."""
    return sum(t.ByteSize() for t in model.graph.initializer)


def needs_external_data(model: onnx.ModelProto) -> bool:
    return weight_bytes(model) > EXTERNAL_DATA_BYTES


def save_onnx(model: onnx.ModelProto, path: str | Path, external: bool | None = None) -> None:
    """Save `model` to `path`, its tensors in `data_file(path)` when they need external data
    (default: when they pass EXTERNAL_DATA_BYTES)."""
    path = Path(path)
    if external is None:
        external = needs_external_data(model)
    if not external:
        onnx.save_model(model, str(path))
        return
    onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                    location=data_file(path).name, size_threshold=1024)  # fmt: skip


def input_name(model: Detector) -> str:
    """ "frames" for video-mode models, "features" for feature-mode ones."""
    return "frames" if model.backbone is not None else "features"


def check_window(model: Detector, window: int) -> None:
    """Refuse a window the backbone cannot cut into whole chunks."""
    if window < 1:
        raise PbdError(f"window must be positive, got {window}")
    if model.backbone is not None:
        chunk = model.config.backbone.chunk_frames
        if window % chunk:
            raise PbdError(
                f"window {window} is not a multiple of the {chunk}-frame chunk of the backbone; "
                f"use e.g. --window {max(chunk, window // chunk * chunk)}"
            )


def example_valid(model: Detector, batch: int) -> torch.Tensor | None:
    """Valid head points (B,) int64 for a masked model's example windows, None otherwise:
    the first window full, the others padded to shorter and shorter lengths."""
    if not model.masked:
        return None
    length = model.config.head.length
    return torch.tensor([length - i * length // (batch + 1) for i in range(batch)])


def example_input(model: Detector, batch: int, window: int) -> torch.Tensor:
    """A random input of the exported shape: (B, 3, T, H, W) or (B, C, T)."""
    inp = model.config.input
    gen = torch.Generator().manual_seed(0)
    if model.backbone is None:
        return torch.randn(batch, inp.feature_dim, window, generator=gen)
    return torch.randn(batch, 3, window, inp.crop, inp.crop, generator=gen)


class _DynamicTimeGraph(nn.Module):
    """`Detector.predict` with the resize to the head length always in the graph.

    Tracing bakes `Detector.features`' "resize only if the lengths differ" test in at the
    example's length; with a dynamic time axis other lengths must still be resized. At equal
    lengths a half-pixel linear resize is the identity, so the outputs do not change.
    """

    def __init__(self, model: Detector):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor, valid=None) -> tuple[torch.Tensor, torch.Tensor]:
        m = self.model
        feats = m.backbone(x) if m.backbone is not None else x  # (B, C, T')
        feats = F.interpolate(feats, size=m.config.head.length, mode="linear", align_corners=False)
        logits, offsets = m.detect(feats, valid)  # (B, N, K), (B, N, 2)
        return torch.sigmoid(logits), decode_segments(m.positions, offsets)


class _PredictGraph(nn.Module):
    def __init__(self, model: Detector):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor, valid=None) -> tuple[torch.Tensor, torch.Tensor]:
        return self.model.predict(x, valid)


def export_onnx(
    model: Detector,
    path: str | Path,
    *,
    window: int | None = None,
    batch: int = 1,
    dynamic: bool = False,
    opset: int = 17,
) -> Path:
    """Write `model` as one fp32 ONNX file, simplified with onnxslim and checked.

    Args:
        model: the detector (any depth or widths; put in eval mode for the export).
        path: the .onnx file to write (atomically).
        window: input steps per window; None takes the model's configured window.
        batch: batch size of the example (the static batch unless `dynamic`).
        dynamic: make batch and time (axis 2) dynamic axes named "batch" and "time".
        opset: ONNX opset, >= 17.

    Returns:
        The written path.
    """
    window = window or model.config.input.window
    check_window(model, window)
    if batch < 1:
        raise PbdError(f"batch must be at least 1, got {batch}")
    if opset < 17:
        raise PbdError(f"opset {opset} < 17 has no LayerNormalization; use --opset 17 or later")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    name = input_name(model)
    graph = (_DynamicTimeGraph if dynamic else _PredictGraph)(model)
    axes = None
    if dynamic:
        axes = {name: {0: "batch", 2: "time"}, **{o: {0: "batch"} for o in OUTPUT_NAMES}}
        if model.masked:
            axes[VALID_NAME] = {0: "batch"}
    args = (example_input(model, batch, window),)
    if model.masked:
        args += (example_valid(model, batch),)
    was_training = model.training
    model.eval()

    def write(tmp: Path):
        # Traced in a folder of its own: over 2 GB, torch writes one file per tensor beside it.
        with tempfile.TemporaryDirectory(dir=path.parent, prefix=f".{path.name}.trace-") as work:
            traced = Path(work) / path.name
            _trace(graph, args, traced, name, axes, opset)
            proto = onnx.load(str(traced))
        if not needs_external_data(proto):
            proto = onnxslim.slim(proto)
            onnx.checker.check_model(proto, full_check=True)
            onnx.save(proto, str(tmp))
            return
        try:  # onnxslim works in memory; its shape inference goes through a file when large
            proto = onnxslim.slim(proto)
            slimmed = "slimmed with onnxslim"
        except Exception as exc:  # noqa: BLE001 - older onnxslim: "Failed to serialize proto"
            reason = " ".join(str(exc).split())[:120]
            slimmed = f"onnxslim skipped ({type(exc).__name__}: {reason})"
            del proto.graph.value_info[:]  # the tracer's intermediate types go stale later
        log.log(
            logging.INFO if slimmed.startswith("slimmed") else logging.WARNING,
            "%s: %.2f GB of weights, over protobuf's 2 GB: saved with external data %s; %s",
            path.name, weight_bytes(proto) / 1e9, data_file(path).name, slimmed,
        )  # fmt: skip
        onnx.save_model(proto, str(tmp), save_as_external_data=True, all_tensors_to_one_file=True,
                        location=data_file(path).name, size_threshold=1024)  # fmt: skip
        del proto
        onnx.checker.check_model(str(tmp), full_check=True)  # the path form reads external data

    try:
        write_file(path, write)
    finally:
        model.train(was_training)
    log.info("exported %s (%d nodes)", path, sum(count_ops(path).values()))
    return path


def _trace(graph: nn.Module, args: tuple, out: Path, name: str, axes, opset: int) -> None:
    # The TorchScript exporter: 10x faster than dynamo=True here, keeps exactly the asked
    # opset (dynamo emits 18 and cannot convert down) and handles these simple dynamic axes.
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # tracer and deprecation warnings; parity is tested
        torch.onnx.export(
            graph,
            args,
            str(out),
            input_names=[name, VALID_NAME][: len(args)],
            output_names=list(OUTPUT_NAMES),
            dynamic_axes=axes,
            opset_version=opset,
            dynamo=False,
        )


def count_ops(path_or_model) -> Counter:
    """Node count per op type of an ONNX file or ModelProto (top-level graph)."""
    model = path_or_model
    if not isinstance(model, onnx.ModelProto):
        model = onnx.load(str(path_or_model), load_external_data=False)
    return Counter(node.op_type for node in model.graph.node)
