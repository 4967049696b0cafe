"""The torch-free bottom layer: what both the toolchain and the deploy runtime need.

annotations (ActivityNet / THUMOS14 files), video (PyAV decoding and encoding, windows of
frames), features (.npy feature files), windows (a model's windows and time mapping),
postprocess (top-k, NMS, Soft-NMS reference), nms (the compiled Soft-NMS the runtime and eval
use), opentad_post (OpenTAD's post-processing), postprocessors (a model's "pbd" or "opentad"
post-processing behind one interface), metrics (mAP at tIoU), compare (what "the
same detections" means across backends), config (dataclass (de)serialisation), atomic
(durable writes and output locks). numpy, numba and PyAV only; nothing here imports torch
or any other pbd_deploy package but `errors` and `optional`.
"""
