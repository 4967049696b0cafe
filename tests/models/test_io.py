import json

import pytest
import torch

from pbd_deploy.compress.blocks import drop_block
from pbd_deploy.errors import PbdError
from pbd_deploy.models.detector import Detector, DetectorConfig, InputConfig
from pbd_deploy.models.io import load_model, save_model
from tests.conftest import tiny_config


def test_model_directory_round_trips_exactly(tiny_model, tmp_path):
    small = drop_block(tiny_model, 2)
    small.config.history.append({"stage": "test", "figure": 1.5})
    save_model(small, tmp_path / "m")
    loaded = load_model(tmp_path / "m")
    assert loaded.config == small.config
    for key, value in small.state_dict().items():
        assert torch.equal(value, loaded.state_dict()[key]), key
    frames = torch.randn(1, 3, 32, 32, 32)
    with torch.no_grad():  # equal weights, same process and threads: bit-identical outputs
        assert torch.equal(small(frames)[0], loaded(frames)[0])
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == [
        "config.json",
        "model.safetensors",
    ]


def test_existing_output_needs_force_and_nothing_half_written(tiny_model, tmp_path):
    out = tmp_path / "m"
    save_model(tiny_model, out)
    with pytest.raises(PbdError, match="already exists"):
        save_model(tiny_model, out)
    save_model(drop_block(tiny_model, 0), out, force=True)
    assert load_model(out).config.backbone.block_indices == [1, 2, 3]
    assert [p.name for p in tmp_path.iterdir()] == ["m"]  # no temporary leftovers


def test_corrupt_weights_and_config_are_clear_errors(tiny_model, tmp_path):
    save_model(tiny_model, tmp_path / "m")
    (tmp_path / "m" / "model.safetensors").write_bytes(b"\x00garbage" * 10)
    with pytest.raises(PbdError, match="corrupt or not a safetensors"):
        load_model(tmp_path / "m")
    (tmp_path / "m" / "config.json").write_text("{not json")
    with pytest.raises(PbdError, match="not valid JSON"):
        load_model(tmp_path / "m")
    with pytest.raises(PbdError, match="does not exist"):
        load_model(tmp_path / "nope")


def test_weights_of_another_architecture_are_refused(tiny_model, tmp_path):
    save_model(tiny_model, tmp_path / "m")
    wider = Detector(tiny_config(classes=("a", "b", "c", "d")))
    save_model(wider, tmp_path / "w")
    config = json.loads((tmp_path / "w" / "config.json").read_text())
    (tmp_path / "m" / "config.json").write_text(json.dumps(config))
    with pytest.raises(PbdError, match="wrong shapes.*cls_head.out"):
        load_model(tmp_path / "m")


def test_feature_mode_detector_runs():
    base = tiny_config()
    base.head.in_dim = 24
    config = DetectorConfig(
        name="features",
        class_names=base.class_names,
        backbone=None,
        input=InputConfig(mode="features", window=16, feature_dim=24),
        head=base.head,
    )
    model = Detector(config)
    scores, segments = model.predict(torch.randn(2, 24, 16))
    assert scores.shape == (2, 16 + 8 + 4, 3) and segments.shape == (2, 28, 2)


def test_force_replaces_a_model_directory_the_toolchain_wrote(tmp_path):
    """`--force` over an earlier init/train/convert output replaces it; a foreign dir is kept."""
    from click.testing import CliRunner

    from pbd_deploy.cli import main

    out = tmp_path / "m"
    args = ["init", "videomae-tiny", "--out", str(out), "--num-classes", "2"]
    assert CliRunner().invoke(main, args).exit_code == 0
    (out / "stale.txt").write_text("from the earlier run")
    again = CliRunner().invoke(main, args + ["--force"])
    assert again.exit_code == 0, again.output
    assert (out / "config.json").is_file() and not (out / "stale.txt").exists()  # replaced
    foreign = tmp_path / "home"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    refused = CliRunner().invoke(main, ["init", "videomae-tiny", "--out", str(foreign),
                                        "--num-classes", "2", "--force"])  # fmt: skip
    assert refused.exit_code == 2 and (foreign / "notes.txt").read_text() == "mine"
