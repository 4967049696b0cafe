"""`pbd-deploy bench` through Click: both command forms, outputs, one-line errors."""

import json

import pytest
from click.testing import CliRunner

from pbd_deploy.cli import main


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_models_form_writes_table_json_and_plot(model_dirs, tmp_path):
    base, small = model_dirs
    out, plot = tmp_path / "r.json", tmp_path / "r.png"
    result = run("bench", base, small, "--iters", 2, "--warmup", 0, "--threads", 1,
                 "--json", out, "--plot", plot)  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "efficiency" in result.output and "small" in result.output
    rows = json.loads(out.read_text())["rows"]
    assert [r["model"] for r in rows] == ["base", "small"] and rows[1]["ideal_speedup"] > 1
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(tmp_path.glob(".*tmp*"))  # nothing half-written left behind


def test_gemm_subcommand(tmp_path):
    out = tmp_path / "g.json"
    result = run("bench", "gemm", "--model", "videomae-tiny", "--tokens", "64",
                 "--iters", 1, "--threads", 1, "--json", out)  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "GFLOP/s" in result.output and "narrow" in result.output
    data = json.loads(out.read_text())
    assert {r["variant"] for r in data["rows"]} == {"full", "narrow"}


@pytest.mark.parametrize(
    "args, message",
    [
        (["--backend", "tensorflow"], "unknown backend 'tensorflow'"),
        (["--iters", "0"], "--iters must be at least 1"),
        (["--backend", "trt", "--device", "cuda"], "the trt backend runs .engine files"),
    ],
)
def test_bad_inputs_exit_2_with_one_line(model_dirs, args, message):
    result = run("bench", model_dirs[0], *args)
    assert result.exit_code == 2
    assert result.output.strip().startswith("error:") and message in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_help_of_every_form():
    for args in (["bench", "--help"], ["bench", "models", "--help"], ["bench", "gemm", "--help"]):
        result = run(*args)
        assert result.exit_code == 0 and "Example" in result.output


def test_options_cover_the_config():
    """Every BenchConfig field has its option (and nothing else but outputs and models)."""
    from dataclasses import fields

    from pbd_deploy.bench.config import BenchConfig
    from pbd_deploy.cli.bench import models

    options = {p.name for p in models.params} - {"models", "json_out", "plot"}
    assert options == {f.name for f in fields(BenchConfig)}
