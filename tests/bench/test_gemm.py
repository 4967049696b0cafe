import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from pbd_deploy.bench.gemm import GemmConfig, block_gemms, gemm_sweep, time_gemm
from pbd_deploy.bench.probe import probe_model
from pbd_deploy.errors import PbdError
from pbd_deploy.models.vit import BackboneConfig, Block

NARROW = BackboneConfig(dim=32, heads=1, head_dim=16, mlp_dims=[72] * 12, img_size=32)


@pytest.mark.parametrize("bb", [BackboneConfig(dim=32, heads=2, img_size=32), NARROW])
def test_block_gemms_are_the_flops_of_a_real_block(bb):
    """The probed shapes do exactly the matrix work torch counts in a Block's forward."""
    seq = 8 * 2 * 2  # a 16-frame chunk of 32x32 frames in 16x16 patches
    chunks = 3
    with torch.device("meta"):
        block = Block(bb.dim, bb.heads, bb.mlp_dim(0), head_dim=bb.head_dim)
        x = torch.empty(chunks, seq, bb.dim)
    counter = FlopCounterMode(display=False)
    with counter:
        block(x)
    shapes = block_gemms(bb, chunks * seq, attention=True)
    assert sum(s.flops for s in shapes) == counter.get_total_flops()
    linear = [s for s in shapes if s.op in ("qkv", "proj", "fc1", "fc2")]
    assert [(s.k, s.n) for s in linear] == [
        (bb.dim, 3 * bb.attn_dim),
        (bb.attn_dim, bb.dim),
        (bb.dim, bb.mlp_dim(0)),
        (bb.mlp_dim(0), bb.dim),
    ]


def test_sweep_reports_flops_over_time():
    config = GemmConfig(tokens=[64, 128], iters=2, warmup=1, threads=1)
    rows = gemm_sweep({"a": BackboneConfig(dim=32, heads=2, img_size=32)}, config)
    assert len(rows) == 2 * 5  # four GEMMs and the block per token count
    for row in rows:
        assert row["gflops_per_s"] == pytest.approx(row["flops"] / row["seconds"] / 1e9)
    for tokens in (64, 128):
        ops = [r for r in rows if r["tokens"] == tokens]
        block = next(r for r in ops if r["op"] == "block")
        assert block["flops"] == sum(r["flops"] for r in ops if r["op"] != "block")
        assert block["seconds"] == pytest.approx(sum(r["seconds"] for r in ops if r is not block))


def test_time_gemms_interleaves_the_shapes_and_takes_medians(monkeypatch):
    # Timing itself is not asserted (a loaded machine reorders anything): the scheduling is.
    from pbd_deploy.bench import gemm

    calls = []
    monkeypatch.setattr(gemm, "_matmul", lambda shape, config: lambda: calls.append(shape.op))
    seconds = iter([5.0, 1.0, 3.0, 2.0, 4.0, 9.0])
    monkeypatch.setattr(gemm, "_time_one", lambda call, device: (call(), next(seconds))[1])
    shapes = [gemm.GemmShape("s", 8, 8, 8), gemm.GemmShape("b", 16, 16, 16)]
    medians = gemm.time_gemms(shapes, GemmConfig(iters=3, warmup=1, threads=1))
    assert calls == ["s", "b"] * 4  # one warm-up round, then three timed rounds, alternating
    assert medians == [4.0, 2.0]


def test_the_timed_product_has_the_shape_of_the_gemm():
    from pbd_deploy.bench.gemm import GemmShape, _matmul

    config = GemmConfig(iters=1, warmup=0, threads=1)
    assert _matmul(GemmShape("x", 6, 5, 7), config)().shape == (6, 7)
    assert _matmul(GemmShape("x", 6, 5, 7, batch=3), config)().shape == (3, 6, 7)
    assert time_gemm(GemmShape("x", 6, 5, 7), config) > 0


def test_probe_compares_full_and_equal_macs_narrow():
    config = GemmConfig(tokens=[128], iters=1, warmup=0, threads=1)
    result = probe_model("videomae-tiny", 3, config)
    v = result["variants"]
    assert v["narrow"]["backbone_gmacs"] == pytest.approx(v["depth"]["backbone_gmacs"], rel=0.01)
    assert v["narrow"]["blocks"] == 12 and v["depth"]["blocks"] == 9
    (summary,) = result["summary"]
    assert summary["depth_gemm_speedup"] == pytest.approx(12 / 9)
    assert summary["width_ideal_speedup"] > 1


def test_bad_gemm_options():
    with pytest.raises(PbdError, match="dtype"):
        GemmConfig(dtype="int4")
    with pytest.raises(PbdError, match="tokens"):
        GemmConfig(tokens=[0])
    with pytest.raises(PbdError, match="--drop"):
        probe_model("videomae-tiny", 12, GemmConfig(tokens=[64], iters=1))


@pytest.mark.gpu
def test_cuda_probe_reports_tflops():
    config = GemmConfig(device="cuda", tokens=[3200], iters=5)
    result = probe_model("videomae-s", 3, config)
    block = [r for r in result["rows"] if r["op"] == "block"]
    assert all(r["gflops_per_s"] > 1000 for r in block)  # > 1 TFLOP/s on any recent GPU
