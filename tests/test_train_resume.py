"""`train --resume`: a run stopped anywhere and resumed ends with the uninterrupted run's weights."""

from __future__ import annotations

import pytest
import torch

from pbd_deploy.core.annotations import load_annotations
from pbd_deploy.data.dataset import TadDataset
from pbd_deploy.errors import PbdError
from pbd_deploy.models.detector import Detector
from pbd_deploy.train import TrainConfig, train
from tests.conftest import tiny_config

CONFIG = TrainConfig(epochs=3, batch_size=2, windows_per_video=1, ema=True, ema_decay=0.9)


class Killed(Exception):
    pass


def _run(synth_data, state_file=None, resume=False, stop_at=None, config=CONFIG):
    """Train a fresh seeded model; `stop_at=(epoch, step)` raises at that training step."""
    classes = load_annotations(synth_data / "annotations.json").class_names
    dataset = TadDataset(synth_data, tiny_config(classes=classes, window=64))
    torch.manual_seed(7)

    def progress(stage, done, total, **figures):
        if stop_at and stage == "train" and (figures["epoch"], done) == stop_at:
            raise Killed

    return train(Detector(dataset.config), dataset, config, progress, state_file, resume)


def _same(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def _records(summary):
    return [{k: v for k, v in e.items() if k != "elapsed_s"} for e in summary["epochs"]]


@pytest.fixture(scope="module")
def uninterrupted(synth_data):
    return _run(synth_data)


@pytest.mark.parametrize("stop_at", [(2, 3), (3, 6)])
def test_resumed_run_ends_with_the_same_weights(synth_data, tmp_path, uninterrupted, stop_at):
    state = tmp_path / "base.train-state.pt"
    with pytest.raises(Killed):
        _run(synth_data, state, stop_at=stop_at)
    assert state.is_file()  # saved after every finished epoch
    model, summary = _run(synth_data, state, resume=True)
    reference, ref_summary = uninterrupted
    assert _same(model, reference)
    assert _records(summary) == _records(ref_summary)
    assert summary["best_epoch"] == ref_summary["best_epoch"]
    assert [p.name for p in tmp_path.iterdir()] == [state.name]  # no temporaries left


def test_resume_refuses_a_missing_state_or_other_options(synth_data, tmp_path):
    state = tmp_path / "s.pt"
    with pytest.raises(PbdError, match="no saved state"):
        _run(synth_data, state, resume=True)
    with pytest.raises(Killed):
        _run(synth_data, state, stop_at=(2, 3))
    with pytest.raises(PbdError, match="holds the state of an interrupted run; pass --resume"):
        _run(synth_data, state)
    other = TrainConfig(**{**CONFIG.to_dict(), "lr": 1e-3})
    with pytest.raises(PbdError, match=r"other options \(lr: 0.002 -> 0.001\)"):
        _run(synth_data, state, resume=True, config=other)
    state.write_bytes(b"not a torch file")
    with pytest.raises(PbdError, match="is unreadable"):
        _run(synth_data, state, resume=True)
