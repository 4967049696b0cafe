"""Detection evaluation: post-processing (NMS) and mAP@tIoU as ActivityNet computes it."""
