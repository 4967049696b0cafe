"""`past_end` is a field of the recovery configs: progressive_block_drop and the CLI take it."""

import json
import shutil

import pytest

from pbd_deploy.compress import BlockDropConfig
from pbd_deploy.compress.pbd import progressive_block_drop
from pbd_deploy.core.annotations import END_TOLERANCE_S
from pbd_deploy.errors import PbdError
from pbd_deploy.models.io import load_model


@pytest.fixture(scope="module")
def past_end_data(synth_data, tmp_path_factory):
    """The synthetic data set with one training segment ending 5 s after its video."""
    out = tmp_path_factory.mktemp("past_end") / "data"
    shutil.copytree(synth_data, out)
    ann = json.loads((out / "annotations.json").read_text())
    video = next(v for v in ann["database"].values() if v["subset"].lower() == "training")
    video["annotations"][-1]["segment"][1] = video["duration"] + END_TOLERANCE_S + 4
    (out / "annotations.json").write_text(json.dumps(ann))
    return out


def test_block_drop_takes_the_past_end_policy(tiny_model_dir, past_end_data):
    model = load_model(tiny_model_dir)
    with pytest.raises(PbdError, match="past"):
        progressive_block_drop(model, past_end_data, BlockDropConfig(drop_indices=[1], epochs=0))
    config = BlockDropConfig(drop_indices=[1], epochs=0, past_end="drop")
    small, report = progressive_block_drop(model, past_end_data, config)
    assert report["kept_blocks"] == [0, 2, 3]
    assert small.config.backbone.block_indices == [0, 2, 3]


def test_unknown_policy_is_refused():
    with pytest.raises(PbdError, match="unknown --past-end 'clip'"):
        BlockDropConfig(past_end="clip")
