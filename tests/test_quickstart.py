"""run_quickstart: the pipeline `pbd-deploy quickstart` and benchmarks/quickstart.py run."""

import json

import pytest
from click.testing import CliRunner

from pbd_deploy import quickstart
from pbd_deploy.cli import main
from pbd_deploy.compress import BlockDropConfig
from pbd_deploy.data.synthetic import SynthConfig
from pbd_deploy.errors import PbdError
from pbd_deploy.eval.evaluate import evaluate_path
from pbd_deploy.models.io import load_config
from pbd_deploy.quickstart import QuickstartConfig, run_quickstart
from pbd_deploy.train import TrainConfig

TINY = QuickstartConfig(
    synth=SynthConfig(
        videos=8, classes=3, min_duration=8, max_duration=12, seed=1,
        split_fractions=(0.5, 0.125, 0.375),
    ),
    train=TrainConfig(epochs=1, windows_per_video=1),
    compress=BlockDropConfig(drop_indices=[0], epochs=0),  # no scoring, no recovery
)  # fmt: skip


pytestmark = pytest.mark.slow  # the whole pipeline, tiny: about 20 s of CPU


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("quickstart") / "qs"
    calls = []
    result = run_quickstart(out, TINY, progress=lambda stage, *a, **k: calls.append(stage))
    return out, result, calls


def test_every_stage_runs_in_order_and_reports_its_own_artifacts(run):
    out, result, calls = run
    assert list(result.seconds) == [
        "synth",
        "train",
        "eval_base",
        "compress",
        "eval_small",
        "export",
    ]
    assert calls[0] == "synth" and len(set(calls)) > 1  # progress reached the stages
    data = out / "data"
    assert json.loads((data / "annotations.json").read_text())["synthetic"] == TINY.synth.to_dict()
    assert len(result.train["epochs"]) == 1
    # The figures are those of the files written: re-scored independently here.
    for name, figures in (("base", result.base), ("small", result.small)):
        again = evaluate_path(out / name, data=data, split="test")
        assert again.average_mAP == pytest.approx(figures.average_mAP, abs=1e-9)
    base, small = load_config(out / "base"), load_config(out / "small")
    kept = small.backbone.block_indices
    assert len(kept) == len(base.backbone.block_indices) - 1 == len(result.compress["kept_blocks"])
    manifest = json.loads((out / "deploy" / "model.json").read_text())
    assert manifest["accuracy"]["onnx_fp32"]["average_mAP"] == result.onnx_average_mAP
    assert 0 < result.backbone_macs_kept < 1
    assert (out / "deploy" / "build_engine.sh").is_file()


def test_an_existing_directory_is_refused_before_any_work(run):
    out, _, _ = run
    before = sorted(p.name for p in out.iterdir())
    with pytest.raises(PbdError, match="already exists; pass --force"):
        run_quickstart(out, TINY)
    assert sorted(p.name for p in out.iterdir()) == before


def test_config_round_trips_through_json():
    data = json.loads(json.dumps(TINY.to_dict()))
    assert QuickstartConfig.from_dict(data) == TINY
    with pytest.raises(PbdError, match="unknown option 'epoch' for TrainConfig"):
        QuickstartConfig.from_dict({"train": {"epoch": 3}})


def test_cli_calls_run_quickstart_and_prints_its_figures(run, monkeypatch, tmp_path):
    _, result, _ = run
    seen = {}

    def fake(out, config, force, progress):
        seen.update(out=out, config=config, force=force)
        return result

    monkeypatch.setattr(quickstart, "run_quickstart", fake)
    done = CliRunner().invoke(main, ["quickstart", "--out", str(tmp_path / "q"), "--epochs", "3"])
    assert done.exit_code == 0, done.output
    assert seen == {
        "out": str(tmp_path / "q"),
        "config": QuickstartConfig(train=TrainConfig(epochs=3)),
        "force": False,
    }
    assert f"average {100 * result.base.average_mAP:.2f}" in done.output
    assert f"average {100 * result.small.average_mAP:.2f}" in done.output
    assert f"test average mAP {100 * result.onnx_average_mAP:.2f}" in done.output
    assert str(result.compress["kept_blocks"]) in done.output
