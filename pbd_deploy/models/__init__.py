"""Detector architecture: VideoMAE backbone, ActionFormer head, named sizes, I/O, conversion."""
