"""Budgets: the default, MAC targets, given indices, and the impossible ones."""

import pytest

from pbd_deploy.compress.blocks import block_macs
from pbd_deploy.compress.budget import plan_budget
from pbd_deploy.compress.config import BlockDropConfig
from pbd_deploy.errors import PbdError
from pbd_deploy.models.complexity import count_macs
from pbd_deploy.models.registry import model_config


@pytest.fixture(scope="module")
def tiny12():
    return model_config("videomae-tiny", ["a", "b"])


def test_default_is_a_quarter_of_the_depth(tiny12):
    assert plan_budget(tiny12, BlockDropConfig()).count == 3


def test_block_macs_add_up_to_the_backbone_minus_embedding(tiny12):
    macs = count_macs(tiny12)
    per_block = block_macs(tiny12)
    assert sorted(per_block) == list(range(12))
    # one block of the tiny model, per chunk: tokens x (qkv + proj + fc1 + fc2 weights)
    # + 2 * tokens^2 * dim (q k^T and attention x v); 128 frames = 8 chunks
    dim, chunks = 64, 128 // 16
    tokens = 8 * (32 // 16) ** 2  # 8 tubelets x 2x2 patches per 16-frame chunk
    linear = tokens * (3 * dim * dim + dim * dim + 2 * dim * 4 * dim)
    attention = 2 * tokens * tokens * dim
    assert per_block[0] == chunks * (linear + attention)
    assert sum(per_block.values()) < macs["backbone"]


def test_target_macs_counts_the_blocks_needed(tiny12):
    per_block = block_macs(tiny12)[0]
    total = count_macs(tiny12)["total"]
    budget = plan_budget(tiny12, BlockDropConfig(target_macs=(total - 2.5 * per_block) / total))
    assert budget.remaining(tiny12, []) == 3


@pytest.mark.parametrize(
    "options, message",
    [
        ({"drop": 12}, "--drop 12 is more than the 11 blocks"),
        ({"target_macs": 0.01}, "cannot be reached: dropping 11 of 12 blocks still keeps"),
        ({"drop_indices": [3, 12]}, "--drop-indices [12] are not blocks of this model"),
        ({"drop_indices": list(range(12))}, "would remove all 12 blocks"),
    ],
)
def test_impossible_budgets_are_refused(tiny12, options, message):
    with pytest.raises(PbdError) as info:
        plan_budget(tiny12, BlockDropConfig(**options))
    assert message in str(info.value)


@pytest.mark.parametrize(
    "options, message",
    [
        ({"drop_indices": [1, 5, 1]}, "repeated: [1]"),
        ({"drop": 2, "target_macs": 0.5}, "give only one budget"),
        ({"target_macs": 1.5}, "fraction of MACs kept"),
        ({"criterion": "flops"}, "unknown --criterion"),
        ({"epochs": -1}, "--epochs"),
    ],
)
def test_bad_options_are_refused(options, message):
    with pytest.raises(PbdError) as info:
        BlockDropConfig(**options)
    assert message in str(info.value)
