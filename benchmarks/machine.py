"""Where benchmark results go, and the machine they ran on (`pbd_deploy.bench.machine`)."""

from __future__ import annotations

from pathlib import Path

from pbd_deploy.bench.machine import describe_machine  # noqa: F401 (re-exported)
from pbd_deploy.core.atomic import write_file, write_json

RESULTS = Path(__file__).parent / "results"


def save_results(name: str, result: dict, markdown: str) -> None:
    """Write benchmarks/results/<name>.json and <name>.md."""
    RESULTS.mkdir(exist_ok=True)
    write_json(RESULTS / f"{name}.json", result)
    write_file(RESULTS / f"{name}.md", markdown if markdown.endswith("\n") else markdown + "\n")
