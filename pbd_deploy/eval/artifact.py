"""An exported model (runtime Detector) seen as the torch model `detect_video` expects.

Lets `pbd-deploy eval deploy/model.onnx` run the shipped artifact through exactly the
evaluation path of torch models: same windows, same post-processing, same mAP code.
"""

from __future__ import annotations

import torch

from pbd_deploy.models.detector import DetectorConfig
from pbd_deploy.runtime import Detector as RuntimeDetector


class ArtifactModel:
    """`positions`, `predict(x)`, `config`, `to()` and `eval()` over a runtime Detector."""

    def __init__(self, runtime: RuntimeDetector):
        self.runtime = runtime
        self.config = DetectorConfig.from_dict(runtime.model_config)
        self.positions = torch.from_numpy(runtime.positions)  # (N,)

    def to(self, device):  # the runtime picks its own device (execution provider)
        return self

    def eval(self):
        return self

    def predict(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, ...) inputs -> scores (B, N, K), segments (B, N, 2), as `Detector.predict`."""
        scores, segments = self.runtime.predict(x.detach().cpu().numpy())
        return torch.from_numpy(scores), torch.from_numpy(segments)


def load_artifact(path, **runtime_options) -> ArtifactModel:
    """Open a .onnx / .engine file (with its model.json) for evaluation."""
    return ArtifactModel(RuntimeDetector(path, **runtime_options))
