"""`BenchConfig`: what one `pbd-deploy bench` run measures, validated on construction."""

from __future__ import annotations

from dataclasses import dataclass, field

from pbd_deploy.core import config as config_io
from pbd_deploy.errors import PbdError

BACKENDS = ("torch", "ort", "trt")
DEVICES = ("cpu", "cuda")


@dataclass
class BenchConfig:
    """Options of a latency run; JSON round-trips through `to_dict` / `from_dict`.

    `window` overrides the model's window (frames) for model directories; `.onnx` and
    `.engine` files keep their own input shape. `fps` converts windows into video seconds
    when the model does not record its frame rate.
    """

    backends: list[str] = field(default_factory=lambda: ["torch"])
    device: str = "cpu"
    batch: int = 1
    window: int | None = None
    threads: int | None = None  # CPU threads for torch and ORT; None: what torch chose
    warmup: int = 20
    iters: int = 200
    fps: float = 30.0
    power: bool = True  # read tegrastats / jetson-stats when present (Jetson only)

    def __post_init__(self):
        self.backends = list(self.backends)
        if not self.backends:
            raise PbdError("give at least one backend (torch, ort or trt)")
        unknown = [b for b in self.backends if b not in BACKENDS]
        if unknown:
            raise PbdError(f"unknown backend {unknown[0]!r}; choose from {', '.join(BACKENDS)}")
        if self.device not in DEVICES:
            raise PbdError(f"unknown device {self.device!r}; choose cpu or cuda")
        if self.iters <= 0:
            raise PbdError(f"--iters must be at least 1, not {self.iters}")
        if self.warmup < 0:
            raise PbdError(f"--warmup cannot be negative ({self.warmup})")
        if self.batch <= 0:
            raise PbdError(f"--batch must be at least 1, not {self.batch}")
        if self.window is not None and self.window <= 0:
            raise PbdError(f"--window must be a positive number of frames, not {self.window}")
        if self.threads is not None and self.threads <= 0:
            raise PbdError(f"--threads must be at least 1, not {self.threads}")
        if self.fps <= 0:
            raise PbdError(f"--fps must be positive, not {self.fps}")
        if "trt" in self.backends and self.device != "cuda":
            raise PbdError("the trt backend runs on the GPU; add --device cuda")

    def to_dict(self) -> dict:
        return config_io.to_dict(self)

    @classmethod
    def from_dict(cls, data: dict, where: str = "") -> "BenchConfig":
        return config_io.from_dict(cls, data, where)
