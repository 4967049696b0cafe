"""The kill matrix (benchmarks/kill_matrix.py): SIGKILL train, compress and export at seeded
points, resume, and find every output identical to an uninterrupted run's, nothing left behind.

By default three of its points run (a state-file write in train, the LoRA merge in compress,
the final rename in export: about 3 runs of each command); PBD_FULL_KILL_MATRIX=1 runs all
nine, as `python benchmarks/kill_matrix.py` does for benchmarks/results/kill_matrix.md.
"""

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))
import kill_matrix  # noqa: E402

PART = {
    "train": [kill_matrix.STATE],
    "compress": ["pbd_deploy.compress.pbd:merge_adapters"],
    "export": [kill_matrix.FINAL],
}


@pytest.mark.slow
def test_kill_matrix(tmp_path):
    full = os.environ.get("PBD_FULL_KILL_MATRIX") == "1"
    points = None if full else PART
    result = kill_matrix.kill_matrix(tmp_path / "kills", seed=0, log=lambda r: None, points=points)
    rows = result["rows"]
    assert len(rows) == sum(map(len, (points or kill_matrix.POINTS).values()))
    assert {r["command"] for r in rows} == {"train", "compress", "export"}
    for r in rows:
        assert r["killed"], r  # the point was reached and the process died there
        assert r["left_by_kill"], r  # ... leaving a lock, a state or a temporary behind
        assert r["differing_files"] == [], r
        assert r["left_after_resume"] == [], r
    # The state the kills left was what resuming continued from (and then removed).
    assert {r["command"] for r in rows if r["resumed_with"] == "--resume"} == {"train", "compress"}
