"""Where benchmark results go, and the machine they ran on (`pbd_deploy.bench.machine`)."""

from __future__ import annotations

import json
from pathlib import Path

from pbd_deploy.bench.machine import describe_machine  # noqa: F401 (re-exported)

RESULTS = Path(__file__).parent / "results"


def save_results(name: str, result: dict, markdown: str) -> None:
    """Write benchmarks/results/<name>.json and <name>.md."""
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    (RESULTS / f"{name}.md").write_text(markdown if markdown.endswith("\n") else markdown + "\n")
