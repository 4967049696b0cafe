"""The resumable state of a compression run (data/resume.py's RunState).

It holds the options it was made with, the finished iterations, the merged weights after
the last finished iteration, and the iteration in progress (scores, then per-epoch LoRA
weights, optimizer and best checkpoint).
"""

from __future__ import annotations

from pbd_deploy.data import resume
from pbd_deploy.data.resume import cpu_state, fingerprint

__all__ = ["RunState", "cpu_state", "fingerprint"]


class RunState(resume.RunState):
    FRESH = {"baseline": None, "iterations": [], "dropped": [], "weights": None, "pending": None}
