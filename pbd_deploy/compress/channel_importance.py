"""Importance of attention heads and MLP hidden units, from Torch-Pruning's estimators.

Torch-Pruning's dependency graph finds which channels must go together, but it mis-reads
VideoMAE's attention: one fused `qkv` Linear whose output is unbound after a permute, plus
separate q and v biases concatenated with a zero k bias (its trace couples 22 of 96 qkv
channels to `proj` in a 32-wide test block, and every bias entry to every channel). So the
importance pass runs on a copy of the model whose attention is split into three Linear
layers q, k and v (same weights, same outputs): on that form the graph is exact (q, k, v
output channel c <-> proj input channel c, and fc1 output unit u <-> fc2 input unit u), the
groups are checked against that known structure, and Torch-Pruning's Magnitude, Taylor and
Hessian estimators score them. The model itself is cut by the known structure (channels.py).
"""

from __future__ import annotations

import copy
import itertools

import torch
import torch.nn.functional as F
from torch import nn

from pbd_deploy.core.annotations import VideoInfo
from pbd_deploy.data.dataset import TadDataset
from pbd_deploy.data.loader import Batcher
from pbd_deploy.models.actionformer import detection_loss
from pbd_deploy.models.detector import Detector, window_valid
from pbd_deploy.models.vit import Attention
from pbd_deploy.optional import require


class SplitAttention(nn.Module):
    """`Attention` with its fused qkv split into q, k and v Linear layers (same outputs)."""

    def __init__(self, attn: Attention):
        super().__init__()
        self.heads, self.head_dim = attn.heads, attn.head_dim
        inner = attn.heads * attn.head_dim
        weight = attn.qkv.weight.detach()  # (3 * inner, C): q rows, then k, then v
        self.q, self.k, self.v = (nn.Linear(weight.shape[1], inner, bias=b) for b in (1, 0, 1))
        with torch.no_grad():
            for i, (layer, bias) in enumerate(((self.q, attn.q_bias), (self.k, None),
                                               (self.v, attn.v_bias))):  # fmt: skip
                layer.weight.copy_(weight[i * inner : (i + 1) * inner])
                if bias is not None:
                    layer.bias.copy_(bias)
        self.proj = copy.deepcopy(attn.proj)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape  # (B, N, C)
        q, k, v = (
            layer(x).reshape(b, n, self.heads, self.head_dim).transpose(1, 2)
            for layer in (self.q, self.k, self.v)
        )  # each (B, heads, N, head_dim)
        x = F.scaled_dot_product_attention(q, k, v)
        return self.proj(x.transpose(1, 2).reshape(b, n, self.heads * self.head_dim))


def estimator(method: str):
    """Torch-Pruning's importance estimator for `method` (magnitude, taylor, hessian)."""
    tp = require("torch_pruning", "full")
    return {
        "magnitude": lambda: tp.importance.GroupMagnitudeImportance(p=2),
        "taylor": lambda: tp.importance.GroupTaylorImportance(),
        "hessian": lambda: tp.importance.GroupHessianImportance(),
    }[method]()


def channel_importance(
    model: Detector,
    dataset: TadDataset,
    videos: list[VideoInfo],
    method: str,
    windows: int = 64,
    batch_size: int = 8,
    device: str = "cpu",
) -> dict[str, list[list[float]]]:
    """Importance of every head and MLP unit of each kept block (higher = keep).

    Args:
        videos: the calibration videos; their first `windows` sliding windows feed the
            task-loss gradients of Taylor and Hessian (magnitude needs no data).
    Returns:
        {"heads": per block [importance of each head], "units": per block [per unit]}.
        Scores are Torch-Pruning's group importance normalised by the group mean (its
        default), so blocks are comparable for global allocation; a head's score is the sum
        over its head_dim channels.
    """
    tp = require("torch_pruning", "full")
    work = copy.deepcopy(model).to(device).eval().requires_grad_(True)
    for block in work.backbone.blocks:
        block.attn = SplitAttention(block.attn)
    imp = estimator(method)
    if method != "magnitude":
        _gradients(work, dataset, videos, windows, batch_size, device, imp, method)
    example = work.example_input(1).to(device)
    graph = tp.DependencyGraph().build_dependency(work.backbone, example_inputs=example)
    heads, units = [], []
    with torch.no_grad():
        for block in work.backbone.blocks:
            attn, mlp = block.attn, block.mlp
            inner = attn.heads * attn.head_dim
            group = graph.get_pruning_group(
                attn.proj, tp.prune_linear_in_channels, list(range(inner))
            )
            _check_group(group, {attn.proj: "in", attn.q: "out", attn.k: "out", attn.v: "out"})
            per_channel = imp(group)  # (inner,)
            heads.append(per_channel.reshape(attn.heads, attn.head_dim).sum(1).tolist())
            hidden = mlp.fc1.out_features
            group = graph.get_pruning_group(
                mlp.fc1, tp.prune_linear_out_channels, list(range(hidden))
            )
            _check_group(group, {mlp.fc1: "out", mlp.fc2: "in"})
            units.append(imp(group).tolist())
    return {"heads": heads, "units": units}


def _gradients(model, dataset, videos, windows, batch_size, device, imp, method) -> None:
    """Task-loss gradients on calibration windows: summed (Taylor) or squared per window
    and accumulated by the estimator (Hessian's diagonal, Torch-Pruning's recipe)."""
    batcher = Batcher(model, dataset)
    samples = itertools.islice(_windows(dataset, videos), windows)
    size = 1 if method == "hessian" else batch_size  # Hessian: one window per gradient
    model.zero_grad(set_to_none=True)
    while batch := list(itertools.islice(samples, size)):
        x, cls_t, reg_t, valid = (t.to(device) for t in batcher.make(batch))
        loss = detection_loss(*model(x, valid=window_valid(model, valid)), cls_t, reg_t, valid)
        loss = loss["loss"]
        if method == "hessian":
            model.zero_grad(set_to_none=True)
            loss.backward()
            imp.accumulate_grad(model)
        else:
            (loss * len(batch)).backward()  # a sum over windows, whatever the batch size


def _windows(dataset: TadDataset, videos: list[VideoInfo]):
    """(model input, target points, labels, valid points) of every sliding window, in order."""
    for video in videos:
        for start, x, valid in dataset.sliding_windows(video):
            yield (x, *dataset.window_targets(video, start), valid)


def _check_group(group, expected: dict[nn.Module, str]) -> None:
    """The group Torch-Pruning built must be exactly the known coupling (a bug otherwise)."""
    found = {}
    for dep, idxs in group:
        module = dep.target.module
        if isinstance(module, nn.Linear):
            side = "out" if "out_channels" in dep.handler.__name__ else "in"
            found[module] = side
            if len(idxs) != (module.out_features if side == "out" else module.in_features):
                raise RuntimeError(f"Torch-Pruning coupled part of {module} ({len(idxs)} idxs)")
    if found != expected:
        raise RuntimeError(f"Torch-Pruning grouped {found}, expected {expected}")
