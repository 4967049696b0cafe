"""Run the CLI and log, per rank, every video whose windows the data loader decoded.

Used by test_distributed_data.py as `torchrun ... tests/data/rank_reads.py LOG_DIR ARGS...`.
"""

import json
import os
import sys

from pbd_deploy.cli import main
from pbd_deploy.data.loader import WindowItems

if __name__ == "__main__":
    log_dir, args = sys.argv[1], sys.argv[2:]
    reads = []
    fetch = WindowItems.__getitem__

    def logged(self, item):
        reads.append(self.videos[item[0]].video_id)
        return fetch(self, item)

    WindowItems.__getitem__ = logged
    try:
        main(args, standalone_mode=False)
    finally:
        rank = os.environ.get("RANK", "0")
        with open(os.path.join(log_dir, f"rank{rank}.json"), "w") as f:
            json.dump(reads, f)
