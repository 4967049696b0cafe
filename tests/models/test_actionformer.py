import math

import pytest
import torch

from pbd_deploy.models.actionformer import (
    ActionFormerHead,
    HeadConfig,
    assign_targets,
    decode_segments,
    diou_loss,
    point_grid,
    sigmoid_focal,
)

CONFIG = HeadConfig(
    in_dim=8,
    dim=16,
    length=32,
    levels=3,
    heads=2,
    attn_window=5,
    regression_ranges=[[0, 4], [4, 8], [8, 10000]],
)


def brute_force_targets(segments, labels, num_classes, config):
    """ActionFormer's assignment written point by point, as in the paper."""
    cls, reg = [], []
    for level in range(config.levels):
        stride = 2**level
        lo, hi = config.regression_ranges[level]
        for i in range(math.ceil(config.length / stride)):
            p = i * stride
            best = None
            for (a, b), label in zip(segments.tolist(), labels.tolist()):
                c = (a + b) / 2
                r = stride * config.center_radius
                inside = min(p - max(c - r, a), min(c + r, b) - p) > 0
                reach = max(p - a, b - p)
                if inside and lo <= reach <= hi and (best is None or b - a < best[0] - 1e-3):
                    best = (b - a, [p - a, b - p], {label})
                elif inside and lo <= reach <= hi and abs(b - a - best[0]) <= 1e-3:
                    best[2].add(label)
            row = [0.0] * num_classes
            if best:
                for label in best[2]:
                    row[label] = 1.0
            cls.append(row)
            reg.append(best[1] if best else [0.0, 0.0])
    return torch.tensor(cls), torch.tensor(reg)


@pytest.mark.parametrize("seed", range(5))
def test_assignment_matches_a_point_by_point_reference(seed):
    g = torch.Generator().manual_seed(seed)
    starts = torch.rand(6, generator=g) * 28
    segments = torch.stack([starts, starts + 0.5 + torch.rand(6, generator=g) * 20], 1)
    labels = torch.randint(0, 3, (6,), generator=g)
    cls, reg = assign_targets(segments, labels, 3, CONFIG, point_grid(CONFIG))
    ref_cls, ref_reg = brute_force_targets(segments, labels, 3, CONFIG)
    torch.testing.assert_close(cls, ref_cls)
    positive = ref_cls.sum(1) > 0
    assert positive.any()
    torch.testing.assert_close(reg[positive], ref_reg[positive])


def test_targets_decode_back_to_the_ground_truth():
    segments, labels = torch.tensor([[3.0, 11.0], [20.0, 29.0]]), torch.tensor([0, 2])
    positions, _, _ = point_grid(CONFIG)
    cls, reg = assign_targets(segments, labels, 3, CONFIG, point_grid(CONFIG))
    decoded = decode_segments(positions, reg)
    for k, seg in zip(labels, segments):
        hits = cls[:, k] > 0
        assert hits.any()
        torch.testing.assert_close(decoded[hits], seg.expand(int(hits.sum()), 2))


def test_diou_is_zero_for_a_perfect_prediction_and_matches_the_formula():
    target = torch.tensor([[2.0, 3.0]])
    assert diou_loss(target, target).item() == pytest.approx(0.0, abs=1e-7)
    pred = torch.tensor([[1.0, 5.0]])  # segment [-1, 5] vs [-2, 3]
    iou = (1 + 3) / (6 + 5 - 4)
    centre_distance = abs(2 - 0.5)
    enclosing = 7
    expected = 1 - iou + (centre_distance / enclosing) ** 2
    assert diou_loss(pred, target).item() == pytest.approx(expected, rel=1e-6)


def test_sigmoid_focal_matches_the_formula():
    logits, targets = torch.tensor([2.0, -1.0]), torch.tensor([1.0, 0.0])
    p = torch.sigmoid(logits)
    expected = torch.stack(
        [0.25 * -torch.log(p[0]) * (1 - p[0]) ** 2, 0.75 * -torch.log(1 - p[1]) * p[1] ** 2]
    )
    torch.testing.assert_close(sigmoid_focal(logits, targets, 0.25, 2.0), expected)


def test_head_outputs_one_row_per_point_and_starts_at_the_prior():
    head = ActionFormerHead(CONFIG, num_classes=4)
    logits, offsets = head(torch.randn(2, 8, 32))
    assert [t.shape[1] for t in logits] == [32, 16, 8]
    assert sum(t.shape[1] for t in offsets) == point_grid(CONFIG)[0].shape[0]
    assert all((o >= 0).all() for o in offsets)
    mean_prob = torch.sigmoid(torch.cat(logits, 1)).mean().item()
    assert mean_prob == pytest.approx(0.01, abs=0.01)
