"""The two stage configs of deployment: ONNX export (`ExportConfig`) and engine build (`EngineConfig`)."""

from __future__ import annotations

from dataclasses import dataclass

from pbd_deploy.core import config as config_io
from pbd_deploy.core.annotations import subset_roles
from pbd_deploy.errors import PbdError

PRECISIONS = ("fp32", "fp16", "int8")


@dataclass
class ExportConfig:
    """What `pbd-deploy export` produces.

    Attributes:
        window: input steps per window (frames, or feature rows); None: the model's window.
        batch: batch size of the static graph, and the optimum of the dynamic one.
        dynamic: export batch and temporal length as dynamic axes.
        opset: ONNX opset (>= 17 so LayerNormalization stays one node).
        fp16: also write model.fp16.onnx (fp32 inputs and outputs) and measure its mAP.
        int8: also write model.int8.onnx (QDQ, calibrated on `calib`) and measure its mAP.
        calib: dataset directory whose calibration split (part of train) calibrates INT8.
        data: dataset directory for real-input parity and mAP figures; default `calib`.
        split: the split the mAP figures are measured on.
        calib_windows: at most this many calibration windows.
        parity_tolerance: largest max-abs difference between torch and ORT accepted.
        trt: build model.engine when TensorRT and a GPU are present, else write build_engine.sh.
        workspace_gib: TensorRT workspace memory pool limit.
        dla_core: DLA core to build for (Jetson), None for the GPU; needs `fp16`.
        past_end: how annotation segments past their video's end are treated.
        subsets: which split role each annotation subset of `calib` and `data` feeds
            (`--subsets`: a preset or SUBSET=ROLE pairs, see `core.annotations.subset_roles`).
    """

    window: int | None = None
    batch: int = 1
    dynamic: bool = False
    opset: int = 17
    fp16: bool = False
    int8: bool = False
    calib: str | None = None
    data: str | None = None
    split: str = "test"
    calib_windows: int = 32
    parity_tolerance: float = 1e-4
    trt: bool = False
    workspace_gib: float = 4.0
    dla_core: int | None = None
    past_end: str = "error"
    subsets: str = "default"

    def __post_init__(self):
        subset_roles(self.subsets)
        if self.window is not None and self.window < 1:
            raise PbdError(f"--window must be positive, got {self.window}")
        if self.batch < 1:
            raise PbdError(f"--batch must be at least 1, got {self.batch}")
        if not 17 <= self.opset <= 21:
            raise PbdError(
                f"--opset {self.opset} is not supported; use 17 to 21 "
                "(17 is the first with a LayerNormalization op)"
            )
        if self.int8 and not self.calib:
            raise PbdError("--int8 needs calibration data: pass --calib DATA (a dataset directory)")
        if self.calib_windows < 1:
            raise PbdError(f"calib_windows must be positive, got {self.calib_windows}")
        if not 0 < self.parity_tolerance < 1:
            raise PbdError(f"parity tolerance must be in (0, 1), got {self.parity_tolerance}")
        if self.workspace_gib <= 0:
            raise PbdError(f"--workspace must be positive (GiB), got {self.workspace_gib}")
        if self.dla_core is not None and self.dla_core < 0:
            raise PbdError(f"--dla-core must be 0 or more, got {self.dla_core}")
        if self.dla_core is not None and (self.int8 or not self.fp16):
            raise PbdError(
                "--dla-core builds fp16 engines only (DLA runs FP16; other precisions fall "
                "back to the GPU layer by layer): pass --fp16 and not --int8"
            )
        if self.data is None:
            self.data = self.calib

    def to_dict(self) -> dict:
        return config_io.to_dict(self)

    @classmethod
    def from_dict(cls, data: dict, where: str = "") -> "ExportConfig":
        return config_io.from_dict(cls, data, where)


@dataclass
class EngineConfig:
    """How a TensorRT engine is built from an exported ONNX file.

    Shapes are (batch, time) pairs: time is frames (or feature rows) per window. A static
    graph has min == opt == max.

    Attributes:
        precision: "fp32", "fp16" or "int8". On TensorRT 11 this must match the ONNX file
            (fp16 rewrite or QDQ), as its networks are strongly typed.
        workspace_gib: memory pool limit for tactics.
        min_shape, opt_shape, max_shape: the optimization profile over (batch, time).
        dla_core: DLA core (Jetson) or None for the GPU; GPU fallback stays on. fp16 only.
        timing_cache: file reused across builds so later builds skip tactic timing; None:
            the user cache named by TensorRT version and compute capability.

    Python-only: `min_shape`, `opt_shape`, `max_shape`. `pbd-deploy build-engine` takes
    the profile from the export (its shape when static; batch 1..2x and window 0.5..2x
    when dynamic, see `export.tensorrt.default_engine_config`) and its precision from the
    ONNX file unless --precision is given; a custom profile is a Python call.
    """

    precision: str = "fp32"
    workspace_gib: float = 4.0
    min_shape: tuple[int, int] = (1, 768)
    opt_shape: tuple[int, int] = (1, 768)
    max_shape: tuple[int, int] = (1, 768)
    dla_core: int | None = None
    timing_cache: str | None = None

    def __post_init__(self):
        if self.precision not in PRECISIONS:
            raise PbdError(f"precision {self.precision!r} unknown; use one of {PRECISIONS}")
        if self.workspace_gib <= 0:
            raise PbdError(f"--workspace must be positive (GiB), got {self.workspace_gib}")
        if self.dla_core is not None and self.dla_core < 0:
            raise PbdError(f"--dla-core must be 0 or more, got {self.dla_core}")
        self.min_shape, self.opt_shape, self.max_shape = (
            tuple(int(v) for v in s) for s in (self.min_shape, self.opt_shape, self.max_shape)
        )
        for lo, hi in ((self.min_shape, self.opt_shape), (self.opt_shape, self.max_shape)):
            if any(a < 1 or a > b for a, b in zip(lo, hi)):
                raise PbdError(
                    f"shape profile must satisfy 1 <= min <= opt <= max per axis, got "
                    f"min {self.min_shape} opt {self.opt_shape} max {self.max_shape}"
                )

    @property
    def workspace_bytes(self) -> int:
        return int(self.workspace_gib * (1 << 30))

    def to_dict(self) -> dict:
        return config_io.to_dict(self)

    @classmethod
    def from_dict(cls, data: dict, where: str = "") -> "EngineConfig":
        return config_io.from_dict(cls, data, where)
