"""ONNX Runtime backend: the TensorRT or CUDA execution provider when present, else the CPU.

ONNX Runtime's TensorRT provider with no options builds a TensorRT engine at every start
(minutes on a Jetson) and runs it in fp32. It gets an engine cache and a timing cache in
the user cache folder (ORT names the cached engines by model and GPU itself), and FP16
when asked for an fp32 ONNX (`trt_fp16=True`; the fp16 and int8 files carry their types).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from pbd_deploy.core.windows import VALID_NAME
from pbd_deploy.errors import PbdError
from pbd_deploy.optional import require

PREFERRED = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")


def cache_dir() -> Path:
    """Where the TensorRT provider keeps its engines and timing caches."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "pbd-deploy" / "ort-tensorrt"


def tensorrt_options(fp16: bool = False) -> dict:
    """Provider options of ONNX Runtime's TensorRT execution provider (documented names:
    onnxruntime.ai/docs/execution-providers/TensorRT-ExecutionProvider.html)."""
    folder = cache_dir()
    folder.mkdir(parents=True, exist_ok=True)
    return {
        "trt_engine_cache_enable": True,
        "trt_engine_cache_path": str(folder),
        "trt_timing_cache_enable": True,
        "trt_timing_cache_path": str(folder),
        "trt_fp16_enable": bool(fp16),
    }


def with_options(providers: list, trt_fp16: bool = False) -> list:
    """The providers, the TensorRT one given its cache (and fp16) options."""
    return [
        (p, tensorrt_options(trt_fp16)) if p == "TensorrtExecutionProvider" else p
        for p in providers
    ]


def pick_providers(available: list[str]) -> list[str]:
    """The preferred execution providers among the available ones, best first."""
    return [p for p in PREFERRED if p in available] or ["CPUExecutionProvider"]


class OrtBackend:
    """One ONNX Runtime session; `run(x)` returns (scores, segments) for a batch."""

    def __init__(
        self,
        path: Path,
        providers: list[str] | None = None,
        threads: int = 0,
        trt_fp16: bool = False,
    ):
        ort = require("onnxruntime", "gpu")
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads  # 0: ORT's default (all cores)
        # Idle intra-op threads otherwise spin after each run and starve the numpy
        # post-processing (and anything else on a robot's CPU): measured here, 2 threads went
        # from 42 to 22 ms per tiny-model window and Soft-NMS from 48 to 13 ms per video.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        providers = with_options(
            providers or pick_providers(ort.get_available_providers()), trt_fp16
        )
        try:
            self.session = ort.InferenceSession(str(path), options, providers=providers)
        except Exception as exc:  # ORT raises its own exception types (Fail, InvalidGraph...)
            reason = " ".join(str(exc).split())[:300]
            raise PbdError(f"onnxruntime cannot load {path}: {reason}") from None
        self.providers = self.session.get_providers()
        inputs = self.session.get_inputs()
        # a masked model's second input: valid head points per window, int64 (B,)
        self.valid_name = VALID_NAME if any(i.name == VALID_NAME for i in inputs) else None
        inp = next(i for i in inputs if i.name != VALID_NAME)
        self.input_name = inp.name
        self.input_shape = list(inp.shape)  # ints, or names for dynamic axes
        self.output_names = [o.name for o in self.session.get_outputs()]

    @property
    def static_batch(self) -> int | None:
        batch = self.input_shape[0]
        return batch if isinstance(batch, int) else None

    def run(self, x: np.ndarray, valid: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(scores, segments) of a batch; `valid` (B,) int64 for a masked model."""
        feed = {self.input_name: x}
        if self.valid_name is not None:
            if valid is None:
                raise PbdError(
                    "this model has a padding-mask input 'valid': pass valid head points"
                )
            feed[self.valid_name] = np.asarray(valid, dtype=np.int64)
        out = dict(zip(self.output_names, self.session.run(None, feed)))
        return out["scores"], out["segments"]
