"""Scoring: prefix reuse gives the naive scores (hence the same block), criteria are sane."""

import pytest
import torch

from pbd_deploy.compress.blocks import drop_block
from pbd_deploy.compress.importance import (
    best_candidates,
    candidate_outputs,
    score_candidates,
)
from pbd_deploy.core.annotations import load_annotations
from pbd_deploy.data.dataset import TadDataset
from pbd_deploy.eval.inference import evaluate_model
from pbd_deploy.models.detector import Detector
from tests.conftest import tiny_config


@pytest.fixture(scope="module")
def scored_setup(synth_data):
    torch.manual_seed(3)
    classes = load_annotations(synth_data / "annotations.json").class_names
    model = Detector(tiny_config(classes, depth=5)).eval()
    dataset = TadDataset(synth_data, model.config)
    return model, dataset, dataset.split("train")


def test_candidate_outputs_match_the_dropped_models(tiny_model):
    x = torch.randn(2, 3, 32, 32, 32)
    with torch.no_grad():
        for index, logits, offsets, feats in candidate_outputs(tiny_model, x):
            smaller = drop_block(tiny_model, index)
            ref_logits, ref_offsets = smaller(x)
            torch.testing.assert_close(logits, ref_logits, rtol=0, atol=1e-5)
            torch.testing.assert_close(offsets, ref_offsets, rtol=0, atol=1e-5)
            torch.testing.assert_close(feats, smaller.features(x), rtol=0, atol=1e-6)


@pytest.mark.parametrize("criterion", ["loss", "mse", "map"])
def test_prefix_scores_equal_naive_scores(scored_setup, criterion):
    model, dataset, videos = scored_setup
    teacher = Detector(model.config)  # any other model serves as the MSE reference
    fast = score_candidates(model, dataset, videos, criterion, teacher=teacher, batch_size=3)
    slow = score_candidates(
        model, dataset, videos, criterion, teacher=teacher, prefix=False, batch_size=3
    )
    assert sorted(fast) == model.config.backbone.block_indices
    assert fast == pytest.approx(slow, rel=1e-6, abs=1e-9)
    assert best_candidates(fast, criterion) == best_candidates(slow, criterion)


def test_map_score_is_the_map_of_the_dropped_model(scored_setup):
    model, dataset, videos = scored_setup
    scores = score_candidates(model, dataset, videos, "map")
    # An independent computation: the full evaluation path on the physically dropped model.
    for index in (0, 3):
        result, _ = evaluate_model(drop_block(model, index), dataset, "train")
        assert scores[index] == pytest.approx(result.average_mAP, abs=1e-9)


def test_best_candidates_direction_and_ties():
    assert best_candidates({0: 0.5, 1: 0.7, 2: 0.7}, "map", 2) == [1, 2]
    assert best_candidates({0: 0.5, 1: 0.7, 2: 0.1}, "loss") == [2]
    assert best_candidates({4: 1.0, 7: 1.0}, "mse") == [4]
