"""Export: ONNX with parity checks, FP16 / INT8 (QDQ) variants, TensorRT engines or scripts.

`export_model(model_dir, out, config)` is the stage (`pbd-deploy export`); it loads on first
use, so the configs stay importable without torch.
"""

from pbd_deploy.export.config import EngineConfig, ExportConfig

__all__ = ["EngineConfig", "ExportConfig", "export_model"]


def __getattr__(name):
    if name == "export_model":
        from pbd_deploy.export.pipeline import export_model

        return export_model
    raise AttributeError(f"module 'pbd_deploy.export' has no attribute {name!r}")
