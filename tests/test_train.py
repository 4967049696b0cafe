import json

import numpy as np
import pytest

from pbd_deploy.core.annotations import load_annotations
from pbd_deploy.data.dataset import TadDataset
from pbd_deploy.errors import PbdError
from pbd_deploy.models.detector import Detector
from pbd_deploy.models.io import load_model
from pbd_deploy.train import TrainConfig, lr_factor, train, train_model_dir
from tests.conftest import tiny_config


def test_schedule_warms_up_then_decays_by_cosine():
    values = [lr_factor(s, 100, 10) for s in range(100)]
    assert values[0] == pytest.approx(0.1) and values[9] == pytest.approx(1.0)
    assert values[55] == pytest.approx(0.5 * (1 + np.cos(np.pi * 45 / 90)))
    assert all(a >= b for a, b in zip(values[9:], values[10:]))


def test_training_learns_and_never_touches_the_test_split(synth_data, monkeypatch):
    classes = load_annotations(synth_data / "annotations.json").class_names
    dataset = TadDataset(synth_data, tiny_config(classes=classes, window=64))
    roles = []
    original = dataset.split
    monkeypatch.setattr(dataset, "split", lambda role: roles.append(role) or original(role))
    model = Detector(dataset.config)
    seen = []
    config = TrainConfig(epochs=3, batch_size=2, windows_per_video=2, lr=2e-3)
    trained, summary = train(model, dataset, config, progress=lambda *a, **k: seen.append(a[0]))
    assert "test" not in roles and "val" in roles
    assert [e["epoch"] for e in summary["epochs"]] == [1, 2, 3]
    assert summary["epochs"][-1]["loss"] < summary["epochs"][0]["loss"]
    best = max(summary["epochs"], key=lambda e: e["val_mAP"])
    assert summary["best_epoch"] == best["epoch"]
    assert {"train", "epoch"} <= set(seen)


def test_same_seed_gives_the_same_weights(synth_data):
    classes = load_annotations(synth_data / "annotations.json").class_names
    config = TrainConfig(epochs=1, batch_size=2, windows_per_video=1)
    weights = []
    for _ in range(2):
        dataset = TadDataset(synth_data, tiny_config(classes=classes, window=64))
        import torch

        torch.manual_seed(123)  # the model's init; training seeds itself
        model, _ = train(Detector(dataset.config), dataset, config)
        weights.append(model.head.cls_head.out.weight.detach().clone())
    assert (weights[0] == weights[1]).all()


def test_train_model_dir_saves_history_and_log(synth_data, tmp_path):
    out = tmp_path / "base"
    summary = train_model_dir(
        synth_data, "videomae-tiny", out, TrainConfig(epochs=1, batch_size=4, windows_per_video=1)
    )
    model = load_model(out)
    entry = model.config.history[-1]
    assert entry["stage"] == "train" and entry["val_mAP"] == summary["best_val_mAP"]
    assert json.loads((out / "train_log.json").read_text())["best_epoch"] == 1
    with pytest.raises(PbdError, match="already exists"):
        train_model_dir(synth_data, "videomae-tiny", out, TrainConfig(epochs=1))


def test_bad_options_fail_before_any_work():
    with pytest.raises(PbdError, match="--epochs"):
        TrainConfig(epochs=0)
    with pytest.raises(PbdError, match="no CUDA GPU|unknown --device"):
        TrainConfig(device="cuda:0") if not __import__(
            "torch"
        ).cuda.is_available() else TrainConfig(device="tpu")


def test_train_model_dir_is_reproducible_from_the_seed(synth_data, tmp_path):
    config = TrainConfig(epochs=1, batch_size=4, windows_per_video=1, seed=7)
    for name in ("a", "b"):
        train_model_dir(synth_data, "videomae-tiny", tmp_path / name, config)
    a, b = load_model(tmp_path / "a"), load_model(tmp_path / "b")
    for key, value in a.state_dict().items():
        assert (value == b.state_dict()[key]).all(), key


def test_ema_weights_are_what_is_kept(synth_data):
    """With --ema, the returned model is the moving average, not the last raw weights."""
    import copy

    import torch

    classes = load_annotations(synth_data / "annotations.json").class_names
    dataset = TadDataset(synth_data, tiny_config(classes=classes, window=64))
    torch.manual_seed(0)
    start = Detector(dataset.config)
    initial = start.head.cls_head.out.weight.detach().clone()
    moved = {}
    for ema in (False, True):
        config = TrainConfig(epochs=1, batch_size=2, windows_per_video=2, ema=ema, ema_decay=0.9)
        model, _ = train(copy.deepcopy(start), dataset, config)
        moved[ema] = (model.head.cls_head.out.weight.detach() - initial).abs().sum().item()
    # The average lags behind the raw weights, so it has moved less from the start.
    assert 0 < moved[True] < moved[False]
