"""Evaluation of a model (torch, or an exported file) over a split; mAP and NMS are in `core`."""
