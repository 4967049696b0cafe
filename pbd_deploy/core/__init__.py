"""The torch-free bottom layer: what both the toolchain and the deploy runtime need.

annotations (ActivityNet / THUMOS14 files), video (PyAV decoding and encoding, windows of
frames), windows (a model's windows and time mapping), postprocess (top-k, NMS, Soft-NMS
reference), nms (the fast Soft-NMS the runtime and eval use), metrics (mAP at tIoU), atomic
(files and directories written all at once). numpy + PyAV only; nothing here imports torch
or any other pbd_deploy package but `errors` and `optional`.
"""
