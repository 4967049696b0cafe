"""ONNX Runtime backend: the TensorRT or CUDA execution provider when present, else the CPU."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pbd_deploy.errors import PbdError
from pbd_deploy.optional import require

PREFERRED = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")


def pick_providers(available: list[str]) -> list[str]:
    """The preferred execution providers among the available ones, best first."""
    return [p for p in PREFERRED if p in available] or ["CPUExecutionProvider"]


class OrtBackend:
    """One ONNX Runtime session; `run(x)` returns (scores, segments) for a batch."""

    def __init__(self, path: Path, providers: list[str] | None = None, threads: int = 0):
        ort = require("onnxruntime", "gpu")
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads  # 0: ORT's default (all cores)
        # Idle intra-op threads otherwise spin after each run and starve the numpy
        # post-processing (and anything else on a robot's CPU): measured here, 2 threads went
        # from 42 to 22 ms per tiny-model window and Soft-NMS from 48 to 13 ms per video.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        providers = providers or pick_providers(ort.get_available_providers())
        try:
            self.session = ort.InferenceSession(str(path), options, providers=providers)
        except Exception as exc:  # ORT raises its own exception types (Fail, InvalidGraph...)
            reason = " ".join(str(exc).split())[:300]
            raise PbdError(f"onnxruntime cannot load {path}: {reason}") from None
        self.providers = self.session.get_providers()
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        self.input_shape = list(inp.shape)  # ints, or names for dynamic axes
        self.output_names = [o.name for o in self.session.get_outputs()]

    @property
    def static_batch(self) -> int | None:
        batch = self.input_shape[0]
        return batch if isinstance(batch, int) else None

    def run(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        out = dict(zip(self.output_names, self.session.run(None, {self.input_name: x})))
        return out["scores"], out["segments"]
