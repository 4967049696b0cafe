"""Alignment loss terms against their formulas, and block pairing by original index."""

import math

import pytest
import torch

from pbd_deploy.compress.align import AlignWeights, alignment_loss, class_kl, feature_mse
from pbd_deploy.compress.blocks import drop_block
from pbd_deploy.models.actionformer import assign_targets, point_grid


def test_binary_kl_matches_the_bernoulli_formula():
    s, t, temp = torch.tensor([[0.3], [-1.2]]), torch.tensor([[1.5], [0.4]]), 2.0
    expected = 0.0
    for a, b in zip(s.flatten().tolist(), t.flatten().tolist()):
        q = 1 / (1 + math.exp(-a / temp))
        p = 1 / (1 + math.exp(-b / temp))
        expected += p * math.log(p / q) + (1 - p) * math.log((1 - p) / (1 - q))
    assert class_kl(s, t, temp).item() == pytest.approx(expected / 2, rel=1e-5)


def test_softmax_kl_matches_the_formula_and_vanishes_on_equal_inputs():
    s, t = torch.randn(5, 3), torch.randn(5, 3)
    p, q = torch.softmax(t / 3.5, -1), torch.softmax(s / 3.5, -1)
    expected = (p * (p / q).log()).sum(-1).mean()
    assert class_kl(s, t, 3.5).item() == pytest.approx(expected.item(), rel=1e-5)
    assert class_kl(t, t, 3.5).item() == pytest.approx(0.0, abs=1e-7)
    assert class_kl(s[:, :1], s[:, :1], 1.0).item() == pytest.approx(0.0, abs=1e-7)


def test_feature_mse_pairs_student_blocks_with_teacher_blocks_of_the_same_index():
    teacher = [torch.full((2, 3), float(i)) for i in range(4)]  # block i outputs i
    student = [torch.full((2, 3), float(i)) for i in (0, 2, 3)]
    assert feature_mse(student, [0, 2, 3], teacher, [0, 1, 2, 3]).item() == 0.0
    # paired by position instead of index, block 2 would meet teacher block 1: error 1
    shifted = feature_mse(student, [0, 1, 2], teacher, [0, 1, 2, 3]).item()
    assert shifted == pytest.approx((0 + 1 + 1) / 3)


def test_alignment_loss_has_every_term_and_vanishes_for_a_perfect_copy(tiny_model):
    torch.manual_seed(0)
    x = torch.randn(2, 3, 32, 32, 32)
    grid = point_grid(tiny_model.config.head)
    segs, labels = torch.tensor([[2.0, 9.0]]), torch.tensor([1])
    cls_t, reg_t = assign_targets(segs, labels, 3, tiny_model.config.head, grid)
    batch = (x, cls_t[None].repeat(2, 1, 1), reg_t[None].repeat(2, 1, 1))
    valid = torch.ones(2, grid[0].shape[0], dtype=torch.bool)
    weights = AlignWeights()
    same = alignment_loss(tiny_model, tiny_model, weights, *batch, valid)
    assert {"loss", "cls", "reg", "feat", "kd_cls", "kd_reg"} <= set(same)
    for term in ("feat", "kd_cls", "kd_reg"):
        assert same[term].item() == pytest.approx(0.0, abs=1e-5)
    student = drop_block(tiny_model, 1).train()
    losses = alignment_loss(student, tiny_model, weights, *batch, valid)
    assert losses["feat"].item() > 0 and losses["kd_reg"].item() > 0
    expected = losses["cls"] + losses["reg"] + losses["feat"] + losses["kd_cls"] + losses["kd_reg"]
    assert losses["loss"].item() == pytest.approx(expected.item(), rel=1e-6)
    losses["loss"].backward()
    assert student.backbone.blocks[0].attn.qkv.weight.grad.abs().sum() > 0
