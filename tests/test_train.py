import dataclasses
import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from pbd_deploy.core.annotations import load_annotations
from pbd_deploy.data.dataset import TadDataset
from pbd_deploy.errors import PbdError
from pbd_deploy.models.detector import Detector
from pbd_deploy.models.io import load_model
from pbd_deploy.train import TrainConfig, lr_factor, train, train_model_dir
from tests.conftest import tiny_config


@pytest.fixture
def tiny_registry(monkeypatch):
    """train_model_dir builds "videomae-tiny" with the 4-block test config: the same code path
    (fresh model from the registry, seeded initialisation) at a fraction of the cost."""
    from pbd_deploy import train as train_module

    monkeypatch.setattr(
        train_module, "model_config", lambda name, classes: tiny_config(classes, window=64)
    )


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
    assert {"train", "epoch"} <= set(seen)


def test_the_best_validation_epoch_is_kept(synth_data, monkeypatch):
    """Scripted val mAPs 0.2, 0.5, 0.3: the weights returned are those scored at epoch 2."""
    from pbd_deploy import train as train_module

    scripted, scored = iter([0.2, 0.5, 0.3]), []

    def evaluate(model, *args, **kwargs):
        scored.append({k: v.detach().clone() for k, v in model.state_dict().items()})
        value = next(scripted)
        return SimpleNamespace(average_mAP=value, mAP=np.full(5, value)), {}

    monkeypatch.setattr(train_module, "evaluate_model", evaluate)
    classes = load_annotations(synth_data / "annotations.json").class_names
    dataset = TadDataset(synth_data, tiny_config(classes=classes, window=64))
    torch.manual_seed(0)
    config = TrainConfig(epochs=3, batch_size=4, windows_per_video=1)
    trained, summary = train(Detector(dataset.config), dataset, config)
    assert summary["best_epoch"] == 2 and summary["best_val_mAP"] == 0.5
    kept = trained.state_dict()
    assert all(torch.equal(kept[k], v) for k, v in scored[1].items())
    assert not all(torch.equal(kept[k], v) for k, v in scored[2].items())  # not the last


def test_train_model_dir_saves_history_and_log(synth_data, tmp_path, tiny_registry):
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


def test_train_model_dir_is_reproducible_from_the_seed(synth_data, tmp_path, tiny_registry):
    """Same seed, same weights; another seed, other weights (initialisation and sampling).

    Bit-identical only because both runs are the same code in this process at the same
    torch thread count: float sums depend on the thread count and the CPU, so runs on two
    machines or at two counts agree only to rounding.
    """
    config = TrainConfig(epochs=1, batch_size=4, windows_per_video=1, seed=7)
    for name, seed in (("a", 7), ("b", 7), ("c", 8)):
        train_model_dir(
            synth_data, "videomae-tiny", tmp_path / name, dataclasses.replace(config, seed=seed)
        )
    a, b, c = (load_model(tmp_path / name).state_dict() for name in "abc")
    for key, value in a.items():
        assert torch.equal(value, b[key]), key
    assert not all(torch.equal(value, c[key]) for key, value in a.items())


def test_train_fine_tunes_a_model_directory(synth_data, tmp_path):
    """`train --model MODEL_DIR` starts from that directory: its weights, blocks and classes."""
    from click.testing import CliRunner

    from pbd_deploy.cli import main
    from pbd_deploy.compress.blocks import drop_block
    from pbd_deploy.models.io import save_model

    classes = load_annotations(synth_data / "annotations.json").class_names
    fresh = []
    for seed in (4, 5):
        torch.manual_seed(seed)  # a compressed model: original blocks 0, 2, 3 kept
        fresh.append(drop_block(Detector(tiny_config(classes, window=64)).eval(), 1))
    start, other = fresh
    save_model(start, tmp_path / "start")
    args = ["train", "--data", synth_data, "--model", tmp_path / "start", "--out", tmp_path / "ft"]
    args += ["--epochs", 1, "--batch-size", 4, "--lr", 1e-4]
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    tuned = load_model(tmp_path / "ft")
    assert tuned.config.backbone.block_indices == [0, 2, 3]
    assert tuned.config.class_names == classes
    assert tuned.config.history[-1]["stage"] == "train"

    def distance(x, y):
        pairs = zip(x.state_dict().values(), y.state_dict().values())
        return float(sum((p.float() - q.float()).pow(2).sum() for p, q in pairs) ** 0.5)

    # Trained from the directory's weights: moved from them (one epoch: ~15% of the distance
    # between two initialisations), not re-initialised (~100% of that distance or more).
    assert 0 < distance(tuned, start) < 0.3 * distance(other, start)


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
