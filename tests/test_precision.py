"""--precision and --checkpointing: same loss and gradients as plain fp32, within tolerance."""

import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from pbd_deploy.core.annotations import load_annotations
from pbd_deploy.data.dataset import TadDataset
from pbd_deploy.data.loader import TrainLoader
from pbd_deploy.errors import PbdError
from pbd_deploy.models.detector import Detector
from pbd_deploy.train import TrainConfig, Trainer, task_loss
from tests.conftest import tiny_config


@pytest.fixture(scope="module")
def batch(synth_data):
    classes = load_annotations(synth_data / "annotations.json").class_names
    dataset = TadDataset(synth_data, tiny_config(classes=classes, window=32))
    loader = TrainLoader(dataset, batch_size=4, windows_per_video=1)
    return dataset, next(loader.epoch(np.random.default_rng(0)))


def _loss_and_grads(config, batch, checkpointing=False, precision="fp32", device="cpu"):
    torch.manual_seed(0)
    model = Detector(config).to(device).train()
    model.backbone.checkpointing = checkpointing
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    torch.manual_seed(1)  # the same drop-path draws in every run
    with torch.autocast(torch.device(device).type, dtype=dtype, enabled=precision != "fp32"):
        loss = task_loss(model, *(t.to(device) for t in batch))["loss"].float()
    loss.backward()
    grads = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
    return loss.item(), grads.float().cpu()


def _config(dataset):
    config = dataset.config
    config.backbone.drop_path = 0.2  # checkpointing must replay the random drop-path masks
    return config


def test_checkpointing_gives_the_same_loss_and_gradients(batch):
    dataset, tensors = batch
    loss, grads = _loss_and_grads(_config(dataset), tensors)
    loss_ckpt, grads_ckpt = _loss_and_grads(_config(dataset), tensors, checkpointing=True)
    assert loss_ckpt == pytest.approx(loss, rel=1e-6)
    torch.testing.assert_close(grads_ckpt, grads, rtol=1e-5, atol=1e-7)


def test_bf16_autocast_is_close_to_fp32(batch):
    dataset, tensors = batch
    loss, grads = _loss_and_grads(_config(dataset), tensors)
    loss_bf16, grads_bf16 = _loss_and_grads(_config(dataset), tensors, precision="bf16")
    assert loss_bf16 == pytest.approx(loss, rel=0.03)  # bf16 keeps ~3 significant digits
    cosine = torch.nn.functional.cosine_similarity(grads_bf16, grads, dim=0)
    assert cosine > 0.98


def test_a_bf16_checkpointed_step_trains_on_the_cpu(batch):
    dataset, tensors = batch
    torch.manual_seed(0)
    model = Detector(dataset.config)
    before = [p.detach().clone() for p in model.parameters()]
    config = TrainConfig(epochs=1, batch_size=4, precision="bf16", checkpointing=True)
    trainer = Trainer(model, dataset, config)
    losses = trainer.update(tensors)
    assert np.isfinite(losses["loss"]) and model.backbone.checkpointing
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_fp16_on_the_cpu_and_unknown_precisions_are_refused():
    with pytest.raises(PbdError, match="fp16 needs --device cuda"):
        TrainConfig(precision="fp16")
    with pytest.raises(PbdError, match="unknown --precision"):
        TrainConfig(precision="int4")


@pytest.mark.gpu
@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_on_cuda_is_close_to_fp32(batch, precision):
    dataset, tensors = batch
    loss, grads = _loss_and_grads(_config(dataset), tensors, device="cuda")
    low, low_grads = _loss_and_grads(_config(dataset), tensors, precision=precision, device="cuda")
    assert low == pytest.approx(loss, rel=0.03)
    assert torch.nn.functional.cosine_similarity(low_grads, grads, dim=0) > 0.98


@pytest.mark.gpu
def test_checkpointing_on_cuda_same_gradients_less_memory(batch):
    dataset, tensors = batch
    peaks, results = [], []
    for checkpointing in (False, True):
        torch.cuda.reset_peak_memory_stats()
        results.append(_loss_and_grads(_config(dataset), tensors, checkpointing, device="cuda"))
        peaks.append(torch.cuda.max_memory_allocated())
    torch.testing.assert_close(results[1][1], results[0][1], rtol=1e-4, atol=1e-6)
    assert peaks[1] < peaks[0]


@pytest.mark.gpu
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="nccl needs 2 CUDA GPUs")
def test_train_under_torchrun_with_nccl(synth_data, tmp_path):
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        "-m", "pbd_deploy", "train", "--data", str(synth_data), "--out", str(tmp_path / "m"),
        "--epochs", "1", "--device", "cuda", "--precision", "bf16", "--checkpointing",
    ]  # fmt: skip
    done = subprocess.run(cmd, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / "m" / "config.json").is_file()
