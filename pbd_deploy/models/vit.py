"""VideoMAE ViT backbone as AdaTAD / OpenTAD use it for end-to-end temporal action detection.

A long window of frames is cut into fixed-length chunks (16 frames for VideoMAE); each chunk
goes through the ViT on its own, its tokens are averaged over space, and the per-chunk
temporal features are concatenated into one (B, C, T') sequence for the detection head.
The blocks live in one `nn.ModuleList` together with `block_indices` (their original
positions), so Progressive Block Drop can delete a block and later stages can still tell
which teacher block a kept student block corresponds to.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from pbd_deploy.errors import PbdError
from pbd_deploy.models.adapter import TemporalAdapter


@dataclass
class BackboneConfig:
    """Architecture of the ViT backbone.

    `block_indices` lists the original indices of the kept blocks; it starts as
    range(depth) and shrinks when blocks are dropped. `depth` stays the original count.
    """

    dim: int = 384
    depth: int = 12
    heads: int = 6
    head_dim: int | None = None  # None: dim // heads; set when heads are pruned (fewer heads)
    block_heads: list[int] | None = None  # per kept block, after head pruning; None: heads
    mlp_ratio: float = 4.0
    mlp_dims: list[int] | None = None  # per kept block, after channel pruning; None: dim*ratio
    patch: int = 16
    tubelet: int = 2
    chunk_frames: int = 16
    img_size: int = 160
    final_norm: bool = True
    drop_path: float = 0.0  # stochastic depth while training (also makes blocks droppable)
    block_indices: list[int] | None = None
    # AdaTAD temporal adapters (models/adapter.py) after the blocks of these ORIGINAL indices;
    # their temporal conv spans a whole window of `adapter_frames` frames.
    adapter_indices: list[int] | None = None
    adapter_ratio: float = 0.25
    adapter_frames: int | None = None

    def __post_init__(self):
        if self.block_indices is None:
            self.block_indices = list(range(self.depth))
        if self.head_dim is None and self.dim % self.heads:
            raise PbdError(f"backbone dim {self.dim} is not divisible by heads {self.heads}")
        if self.chunk_frames % self.tubelet:
            raise PbdError("backbone chunk_frames must be a multiple of tubelet")
        if self.adapter_indices and not self.adapter_frames:
            raise PbdError("backbone adapters need adapter_frames (frames per window)")
        if self.block_heads is not None and self.head_dim is None:
            self.head_dim = self.dim // self.heads  # pruned blocks keep the original head size
        for name in ("block_heads", "mlp_dims"):
            widths = getattr(self, name)
            if widths is not None and len(widths) != len(self.block_indices):
                raise PbdError(
                    f"backbone {name} has {len(widths)} entries for "
                    f"{len(self.block_indices)} kept blocks"
                )

    @property
    def attn_dim(self) -> int:
        """Width of q, k and v: heads * head_dim (equals dim unless heads were pruned)."""
        return self.heads * (self.head_dim or self.dim // self.heads)

    def heads_at(self, position: int) -> int:
        """Attention heads of the kept block at `position` (fewer after head pruning)."""
        if self.block_heads is not None:
            return self.block_heads[position]
        return self.heads

    def has_adapter(self, position: int) -> bool:
        """Whether the kept block at `position` carries an AdaTAD adapter."""
        return self.block_indices[position] in (self.adapter_indices or ())

    def mlp_dim(self, position: int) -> int:
        if self.mlp_dims is not None:
            return self.mlp_dims[position]
        return int(self.dim * self.mlp_ratio)


def sincos_table(num_positions: int, dim: int) -> torch.Tensor:
    """VideoMAE's fixed 1-D sine-cosine table over the flattened (t, h, w) tokens: (N, dim)."""
    position = torch.arange(num_positions, dtype=torch.float64)[:, None]
    exponent = 2 * (torch.arange(dim) // 2).double() / dim
    angles = position / torch.pow(10000.0, exponent)[None, :]
    table = torch.empty(num_positions, dim, dtype=torch.float64)
    table[:, 0::2] = torch.sin(angles[:, 0::2])
    table[:, 1::2] = torch.cos(angles[:, 1::2])
    return table.float()


class Attention(nn.Module):
    """Multi-head self-attention with VideoMAE's q and v biases (no k bias)."""

    def __init__(self, dim: int, heads: int, head_dim: int | None = None):
        super().__init__()
        self.heads = heads
        self.head_dim = head_dim or dim // heads
        inner = heads * self.head_dim  # < dim when heads were pruned
        # qkv stays a bias-free nn.Linear so LoRA (peft) can wrap it; q/v biases are added after.
        self.qkv = nn.Linear(dim, inner * 3, bias=False)
        self.q_bias = nn.Parameter(torch.zeros(inner))
        self.v_bias = nn.Parameter(torch.zeros(inner))
        self.proj = nn.Linear(inner, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape  # (B, N, C)
        bias = torch.cat([self.q_bias, torch.zeros_like(self.q_bias), self.v_bias])
        qkv = (self.qkv(x) + bias).reshape(b, n, 3, self.heads, self.head_dim)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)  # each (B, heads, N, head_dim)
        x = F.scaled_dot_product_attention(q, k, v)
        return self.proj(x.transpose(1, 2).reshape(b, n, self.heads * self.head_dim))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


def drop_path(x: torch.Tensor, rate: float, training: bool) -> torch.Tensor:
    """Stochastic depth: zero a residual branch for a random subset of samples."""
    if not training or rate == 0.0:
        return x
    keep = torch.rand(x.shape[0], *(1,) * (x.dim() - 1), device=x.device) >= rate
    return x * keep / (1 - rate)


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(norm1(x)), then x + mlp(norm2(x)), then the adapter.

    The optional `adapter` (AdaTAD) belongs to the block, so dropping the block drops it too.
    """

    def __init__(
        self, dim: int, heads: int, mlp_dim: int, drop_path: float = 0.0, head_dim=None,
        adapter: nn.Module | None = None,
    ):
        super().__init__()
        self.adapter = adapter
        self.drop_path = drop_path
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, heads, head_dim)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, mlp_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + drop_path(self.attn(self.norm1(x)), self.drop_path, self.training)
        x = x + drop_path(self.mlp(self.norm2(x)), self.drop_path, self.training)
        return x if self.adapter is None else self.adapter(x)


class VideoMAEBackbone(nn.Module):
    """VideoMAE ViT that turns (B, 3, T, H, W) frames into (B, C, T / tubelet) features."""

    checkpointing = False  # set by training (--checkpointing); not part of the architecture

    def __init__(self, config: BackboneConfig):
        super().__init__()
        self.config = config
        c = config
        self.patch_embed = nn.Conv3d(
            3,
            c.dim,
            kernel_size=(c.tubelet, c.patch, c.patch),
            stride=(c.tubelet, c.patch, c.patch),
        )
        self.blocks = nn.ModuleList(
            Block(
                c.dim, c.heads_at(i), c.mlp_dim(i), c.drop_path, c.head_dim, _adapter(c, i)
            )
            for i in range(len(c.block_indices))
        )
        self.norm = nn.LayerNorm(c.dim, eps=1e-6) if c.final_norm else nn.Identity()
        grid = c.img_size // c.patch
        table = sincos_table(c.chunk_frames // c.tubelet * grid * grid, c.dim)
        self.register_buffer("pos_embed", table, persistent=False)  # fixed, never trained

    @property
    def block_indices(self) -> list[int]:
        return self.config.block_indices

    def position_embedding(self, t: int, h: int, w: int) -> torch.Tensor:
        """The sin-cos table for a (t, h, w) token grid, interpolated when (h, w) differs."""
        grid = self.config.img_size // self.config.patch
        table = self.pos_embed
        if (h, w) == (grid, grid):
            return table
        table = table.reshape(t, grid, grid, -1).permute(0, 3, 1, 2)  # (t, C, g, g)
        table = F.interpolate(table, size=(h, w), mode="bicubic", align_corners=False)
        return table.permute(0, 2, 3, 1).reshape(t * h * w, -1)

    def embed(self, frames: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int, int, int]]:
        """Cut (B, 3, T, H, W) into chunks and embed them: tokens (B*n, t*h*w, C) and the grid."""
        b, _, total, _, _ = frames.shape
        chunk = self.config.chunk_frames
        n = total // chunk
        x = frames.reshape(b, 3, n, chunk, *frames.shape[-2:]).transpose(1, 2)
        x = self.patch_embed(x.flatten(0, 1))  # (B*n, C, t, h, w)
        _, _, t, h, w = x.shape
        x = x.flatten(2).transpose(1, 2)  # (B*n, t*h*w, C)
        return x + self.position_embedding(t, h, w), (n, t, h, w)

    def pool(self, x: torch.Tensor, grid: tuple[int, int, int, int]) -> torch.Tensor:
        """Average tokens (B*n, t*h*w, C) over space into temporal features (B, C, n*t)."""
        n, t, h, w = grid
        x = self.norm(x).reshape(-1, n, t, h * w, x.shape[-1]).mean(3)  # (B, n, t, C)
        return x.flatten(1, 2).transpose(1, 2)

    def forward(self, frames: torch.Tensor, return_blocks: bool = False):
        """Features (B, C, T'); with `return_blocks` also every kept block's output tokens."""
        if frames.shape[2] % self.config.chunk_frames:
            raise PbdError(
                f"window of {frames.shape[2]} frames is not a multiple of the "
                f"{self.config.chunk_frames}-frame chunk"
            )
        x, grid = self.embed(frames)
        outputs = []
        for block in self.blocks:
            if self.checkpointing and self.training and torch.is_grad_enabled():
                # Activation checkpointing: keep only block inputs, recompute the rest in
                # backward (drop path's random mask is replayed: the RNG state is kept).
                x = checkpoint(block, x, use_reentrant=False)
            else:
                x = block(x)
            outputs.append(x)
        features = self.pool(x, grid)
        return (features, outputs) if return_blocks else features

    def output_length(self, frames: int) -> int:
        return frames // self.config.tubelet


def _adapter(c: BackboneConfig, position: int) -> TemporalAdapter | None:
    if not c.has_adapter(position):
        return None
    steps = c.chunk_frames // c.tubelet
    return TemporalAdapter(c.dim, c.adapter_ratio, steps, c.adapter_frames // c.tubelet)


def init_weights(module: nn.Module) -> None:
    """VideoMAE's initialisation: truncated normal (std 0.02) Linear, unit LayerNorm."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    for m in module.modules():  # after the Linear init: an adapter starts as the identity
        if isinstance(m, TemporalAdapter):
            nn.init.zeros_(m.up_proj.weight)
            nn.init.zeros_(m.up_proj.bias)
