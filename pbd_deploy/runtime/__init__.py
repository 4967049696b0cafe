"""Torch-free runtime: numpy + onnxruntime (or TensorRT) for exported detectors.

from pbd_deploy.runtime import Detector
detections = Detector("deploy/model.onnx").detect("video.mp4")
"""

from pbd_deploy.runtime.detector import Detection, Detector

__all__ = ["Detection", "Detector"]
