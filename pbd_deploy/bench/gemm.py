"""GEMM probe: the achieved FLOP/s of a backbone block's matrix products, per shape.

Dropping whole blocks leaves every GEMM as large as before; narrowing heads and MLP makes
the matrices thinner, and thin GEMMs reach a smaller fraction of the machine's peak. This
probe times each block GEMM alone (torch.matmul: cuBLAS on the GPU, oneDNN/MKL on the CPU)
so the two kinds of compression can be compared shape by shape.
"""

from __future__ import annotations

import contextlib
import statistics
import time
from dataclasses import asdict, dataclass, field

import torch

from pbd_deploy.errors import PbdError
from pbd_deploy.models.vit import BackboneConfig

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


@dataclass
class GemmConfig:
    """Options of a GEMM sweep. `tokens` are rows M of the activations (800 = one chunk)."""

    device: str = "cpu"
    dtype: str | None = None  # None: float32 on the CPU, float16 on the GPU
    tokens: list[int] = field(default_factory=lambda: [800, 1600, 3200, 6400])
    warmup: int = 3
    iters: int = 10
    threads: int | None = None
    attention: bool = False  # also time the two attention matmuls (batched per head)
    # torch (torch.matmul), or a deployment engine on one-MatMul ONNX graphs (gemm_engines):
    # trt (TensorRT), ort-cuda / ort-cpu (ONNX Runtime's CUDA / CPU provider)
    backend: str = "torch"

    def __post_init__(self):
        if self.device not in ("cpu", "cuda"):
            raise PbdError(f"unknown device {self.device!r}; choose cpu or cuda")
        backends = ("torch", "trt", "ort-cuda", "ort-cpu")
        if self.backend not in backends:
            raise PbdError(f"unknown backend {self.backend!r}; choose from {', '.join(backends)}")
        on_gpu = self.backend in ("trt", "ort-cuda")
        if self.backend != "torch" and on_gpu != (self.device == "cuda"):
            raise PbdError(
                f"--backend {self.backend} runs on the {'GPU' if on_gpu else 'CPU'}: "
                f"pass --device {'cuda' if on_gpu else 'cpu'}"
            )
        if self.dtype is None:
            self.dtype = "float16" if self.device == "cuda" else "float32"
        if self.dtype not in DTYPES:
            raise PbdError(f"unknown dtype {self.dtype!r}; choose from {', '.join(DTYPES)}")
        if not self.tokens or min(self.tokens) <= 0:
            raise PbdError("--tokens needs positive token counts")
        if self.iters <= 0 or self.warmup < 0:
            raise PbdError("--iters must be at least 1 and --warmup at least 0")
        if self.threads is not None and self.threads <= 0:
            raise PbdError(f"--threads must be at least 1, not {self.threads}")


@dataclass(frozen=True)
class GemmShape:
    """One matrix product: `batch` times (m x k) @ (k x n)."""

    op: str
    m: int
    k: int
    n: int
    batch: int = 1

    @property
    def flops(self) -> int:
        return 2 * self.batch * self.m * self.k * self.n


def block_gemms(bb: BackboneConfig, tokens: int, attention: bool = False) -> list[GemmShape]:
    """The GEMMs of one backbone block (the first kept one) over `tokens` rows.

    Attention matmuls are batched per chunk and head: a chunk has `seq` tokens (800 for
    16 frames at 160x160), so `tokens` is rounded to whole chunks for them.
    """
    dim, inner, hidden = bb.dim, bb.attn_dim, bb.mlp_dim(0)
    shapes = [
        GemmShape("qkv", tokens, dim, 3 * inner),
        GemmShape("proj", tokens, inner, dim),
        GemmShape("fc1", tokens, dim, hidden),
        GemmShape("fc2", tokens, hidden, dim),
    ]
    if attention:
        grid = bb.img_size // bb.patch
        seq = bb.chunk_frames // bb.tubelet * grid * grid
        batch = max(1, tokens // seq) * bb.heads
        head_dim = inner // bb.heads
        shapes += [
            GemmShape("q@k", seq, head_dim, seq, batch),
            GemmShape("attn@v", seq, seq, head_dim, batch),
        ]
    return shapes


def time_gemm(shape: GemmShape, config: GemmConfig) -> float:
    """Median seconds of one `shape` product on `config.device` (GPU: CUDA events around
    CUDA_CALLS_PER_SAMPLE calls in a row)."""
    return time_gemms([shape], config)[0]


def time_gemms(shapes: list[GemmShape], config: GemmConfig) -> list[float]:
    """Median seconds per shape, the shapes' calls interleaved round by round.

    Interleaving keeps load from other processes (or clock changes) from favouring
    whichever shapes happened to run in a quiet moment.
    """
    if config.backend != "torch":
        from pbd_deploy.bench.gemm_engines import time_engine_gemms

        return time_engine_gemms(
            shapes, config.dtype, config.backend, config.warmup, config.iters, config.threads
        )
    calls = [_matmul(s, config) for s in shapes]
    for _ in range(config.warmup):
        for call in calls:
            call()
    samples = [[] for _ in shapes]
    for _ in range(config.iters):
        for call, out in zip(calls, samples):
            out.append(_time_one(call, config.device))
    return [statistics.median(s) for s in samples]


def _matmul(shape: GemmShape, config: GemmConfig):
    dtype = DTYPES[config.dtype]
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(shape.batch, shape.m, shape.k, generator=gen).to(config.device, dtype)
    b = torch.randn(shape.batch, shape.k, shape.n, generator=gen).to(config.device, dtype)
    a, b = (a[0], b[0]) if shape.batch == 1 else (a, b)
    out = torch.empty(*a.shape[:-1], shape.n, device=config.device, dtype=dtype)
    return lambda: torch.matmul(a, b, out=out)


# GPU: calls per CUDA-event sample. A block GEMM takes microseconds on a datacenter GPU,
# about as long as launching it: between events around a single call the GPU would wait for
# the launch, and its time would count. Back to back, the queue stays ahead of the GPU.
CUDA_CALLS_PER_SAMPLE = 10


def _time_one(call, device: str) -> float:
    if device == "cuda":
        start = torch.cuda.Event(enable_timing=True)
        end = torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(CUDA_CALLS_PER_SAMPLE):
            call()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1e3 / CUDA_CALLS_PER_SAMPLE
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


@contextlib.contextmanager
def torch_threads(count: int | None):
    """Run the block with `count` torch threads (None: unchanged), then restore the old count.

    A library call must not leave the process with another thread count: later work in the
    same process (tests, a training run) would silently change speed and float results.
    """
    before = torch.get_num_threads()
    if count:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def gemm_sweep(
    variants: dict[str, BackboneConfig], config: GemmConfig, progress=None
) -> list[dict]:
    """Time every block GEMM of every variant at every token count.

    At each token count all variants' shapes are timed together, interleaved. Returns one
    row per (variant, tokens, op) with the achieved FLOP/s, plus a row with op "block" per
    (variant, tokens): all the block's GEMM FLOPs over their summed time, the efficiency
    the whole block gets from its matrix products.
    """
    if config.backend == "torch" and config.device == "cuda" and not torch.cuda.is_available():
        raise PbdError("--device cuda needs a CUDA GPU and a CUDA build of torch; none found")
    with torch_threads(config.threads):
        return _sweep(variants, config, progress)


def _sweep(variants: dict[str, BackboneConfig], config: GemmConfig, progress) -> list[dict]:
    rows = []
    for done, tokens in enumerate(config.tokens):
        jobs = [
            (v, s) for v in variants for s in block_gemms(variants[v], tokens, config.attention)
        ]
        seconds = time_gemms([s for _, s in jobs], config)
        for variant in variants:
            timed = [(s, sec) for (v, s), sec in zip(jobs, seconds) if v == variant]
            rows += [_row(variant, tokens, s.op, s, s.flops, sec) for s, sec in timed]
            flops, total = sum(s.flops for s, _ in timed), sum(sec for _, sec in timed)
            rows.append(_row(variant, tokens, "block", None, flops, total))
        if progress:
            progress("gemm", done + 1, len(config.tokens), tokens=tokens)
    return rows


def _row(variant, tokens, op, shape, flops, seconds) -> dict:
    dims = asdict(shape) if shape else {"m": tokens, "k": None, "n": None, "batch": 1}
    dims.pop("op", None)
    return {
        "variant": variant,
        "tokens": tokens,
        "op": op,
        **dims,
        "flops": flops,
        "seconds": seconds,
        "gflops_per_s": flops / seconds / 1e9,
    }
