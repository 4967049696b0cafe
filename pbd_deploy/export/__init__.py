"""Export: ONNX with parity checks, FP16 / INT8 (QDQ) variants, TensorRT engines or scripts."""

from pbd_deploy.export.config import EngineConfig, ExportConfig
from pbd_deploy.export.pipeline import export_model

__all__ = ["EngineConfig", "ExportConfig", "export_model"]
