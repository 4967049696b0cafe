"""OpenTAD's ActionFormer head, module for module: Conv1DTransformerProj, FPNIdentity, head.

Parameter names follow OpenTAD's (`projection.stem.0.attn.query_conv.conv.weight`, ...), so
an OpenTAD / AdaTAD checkpoint maps onto it 1:1 (models/convert.py) and the forward pass
reproduces OpenTAD's within float tolerance (tests/models/test_opentad_fixtures.py compares
against outputs OpenTAD itself computed). Select it with `HeadConfig(kind="opentad")`.

Differences from our own `ActionFormerHead` (models/actionformer.py), which stays the
default for training from scratch: OpenTAD's attention is MaskedMHCA (depthwise-conv
query/key/value with their own LayerNorms, strided convs for downsampling, max-pooled
skip), blocks are scaled by AffineDropPath, the pyramid norms are the neck's, the
regression is ReLU(scale * conv) and there is no input BatchNorm.

Padding mask (`HeadConfig.masked`): OpenTAD pads a window past a short video's end with
the last frame and masks the padded positions. Given `valid` (B,) head points per window,
the head does what OpenTAD's ActionFormer detector does (its `forward_test`): the
projection's convs, position table and attention mask them, the mask follows each strided
level by nearest-neighbour downsampling, and the tower convs mask them. The padded points'
input features stay as they are (that detector calls its backbone without the mask, so its
wrapper's zeroing does not happen). Without `valid` every position is valid and the ops are
the unmasked ones (a full window in OpenTAD has an all-ones mask, which makes its masking a
no-op).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def down_mask(mask: torch.Tensor, length: int) -> torch.Tensor:
    """(B, T) mask -> (B, length), nearest neighbour as OpenTAD's F.interpolate(mode="nearest")."""
    t = mask.shape[-1]
    if t == length:
        return mask
    return mask[:, torch.arange(length, device=mask.device) * t // length]


def valid_mask(valid: torch.Tensor, length: int) -> torch.Tensor:
    """(B,) valid head points (any real dtype) -> (B, length) bool: point i valid iff i < valid."""
    return torch.arange(length, device=valid.device)[None, :] < valid[:, None]


def _masked(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """x (B, C, T) with the masked points zeroed (OpenTAD's `x * mask`). A select rather
    than a product with the mask cast to x's type: the fp16 ONNX rewrite keeps the cast's
    float32 target and breaks the graph."""
    return x if mask is None else torch.where(mask[:, None, :], x, torch.zeros((), dtype=x.dtype))


def _channels_last(norm: nn.LayerNorm, x: torch.Tensor) -> torch.Tensor:
    """LayerNorm over channels of (B, C, T)."""
    return norm(x.transpose(1, 2)).transpose(1, 2)


class ConvModule(nn.Module):
    """Conv1d (no bias when normed) -> LayerNorm(eps 1e-6) -> ReLU, as OpenTAD's ConvModule."""

    def __init__(self, in_dim: int, out_dim: int, kernel: int = 3, norm: bool = True):
        super().__init__()
        self.conv = nn.Conv1d(in_dim, out_dim, kernel, padding=kernel // 2, bias=not norm)
        self.norm = nn.LayerNorm(out_dim, eps=1e-6) if norm else None

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        x = _masked(self.conv(x), mask)  # OpenTAD masks before the norm and after the act
        if self.norm is not None:
            x = _channels_last(self.norm, x)
        return _masked(F.relu(x), mask)


class DepthwiseConv(nn.Module):
    """OpenTAD's ConvModule(groups=C, bias=False) without norm: holds `.conv`."""

    def __init__(self, dim: int, stride: int):
        super().__init__()
        kernel = stride + 1 if stride > 1 else 3
        self.conv = nn.Conv1d(dim, dim, kernel, stride, kernel // 2, groups=dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class MaskedMHCA(nn.Module):
    """Multi-head conv attention; `window` > 1 restricts keys to |i - j| <= window // 2.

    OpenTAD's LocalMaskedMHCA computes the windowed case with Longformer's chunked
    matmuls; a band mask over the full score matrix gives the same result.
    """

    def __init__(self, dim: int, heads: int, stride: int, window: int):
        super().__init__()
        self.heads, self.window = heads, window
        self.query_conv = DepthwiseConv(dim, stride)
        self.key_conv = DepthwiseConv(dim, stride)
        self.value_conv = DepthwiseConv(dim, stride)
        self.query_norm = nn.LayerNorm(dim)
        self.key_norm = nn.LayerNorm(dim)
        self.value_norm = nn.LayerNorm(dim)
        self.query = nn.Conv1d(dim, dim, 1)
        self.key = nn.Conv1d(dim, dim, 1)
        self.value = nn.Conv1d(dim, dim, 1)
        self.proj = nn.Conv1d(dim, dim, 1)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None):
        """Output (B, C, T'); with a (B, T) `mask`, (output, (B, T') mask of the output)."""
        b, c, _ = x.shape
        q, k, v = self.query_conv(x), self.key_conv(x), self.value_conv(x)
        out_mask = None
        if mask is not None:  # query and key/value strides are equal: one mask for all
            out_mask = down_mask(mask, q.shape[-1])
            q, k, v = (_masked(y, out_mask) for y in (q, k, v))
        q = self.query(_channels_last(self.query_norm, q))
        k = self.key(_channels_last(self.key_norm, k))
        v = self.value(_channels_last(self.value_norm, v))
        t = q.shape[-1]
        # (B, C, T) -> (B, heads, T, C / heads)
        q, k, v = (y.view(b, self.heads, c // self.heads, t).transpose(2, 3) for y in (q, k, v))
        allowed = None
        if self.window > 1:
            idx = torch.arange(t, device=x.device)
            allowed = (idx[None, :] - idx[:, None]).abs() <= self.window // 2
        if out_mask is not None:
            # Valid queries see valid keys only; a padded query's row (zeroed below) keeps
            # every key so that no row is empty. (B, 1, T, T)
            keys = out_mask[:, None, None, :] | ~out_mask[:, None, :, None]
            allowed = keys if allowed is None else keys & allowed
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed)
        out = self.proj(out.transpose(2, 3).reshape(b, c, t))
        return out if mask is None else (_masked(out, out_mask), out_mask)


class AffineDropPath(nn.Module):
    """Per-channel scale of a residual branch (stochastic depth only while training)."""

    def __init__(self, dim: int, drop: float = 0.0):
        super().__init__()
        self.drop = drop
        self.scale = nn.Parameter(1e-4 * torch.ones(1, dim, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.scale * x
        if not self.training or self.drop == 0.0:
            return x
        keep = torch.rand(x.shape[0], 1, 1, device=x.device) >= self.drop
        return x * keep / (1 - self.drop)


class TransformerBlock(nn.Module):
    """Pre-LN block: pool_skip(x) + attn(ln1(x)), then + mlp(ln2(.)); stride 2 halves T."""

    def __init__(self, dim: int, heads: int, stride: int, window: int, drop_path: float | None):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = MaskedMHCA(dim, heads, stride, window)
        self.pool_skip = (
            nn.MaxPool1d(stride + 1, stride, (stride + 1) // 2) if stride > 1 else nn.Identity()
        )
        # indices 0 and 3 as in OpenTAD (its dropouts sit at 2 and 4)
        self.mlp = nn.Sequential(
            nn.Conv1d(dim, 4 * dim, 1), nn.GELU(), nn.Identity(), nn.Conv1d(4 * dim, dim, 1)
        )
        affine = drop_path is not None
        self.drop_path_attn = AffineDropPath(dim, drop_path) if affine else nn.Identity()
        self.drop_path_mlp = AffineDropPath(dim, drop_path) if affine else nn.Identity()

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None):
        """Output; with a (B, T) `mask`, (output, mask of the output's points)."""
        if mask is None:
            out = self.pool_skip(x) + self.drop_path_attn(self.attn(_channels_last(self.ln1, x)))
            return out + self.drop_path_mlp(self.mlp(_channels_last(self.ln2, out)))
        att, mask = self.attn(_channels_last(self.ln1, x), mask)
        out = _masked(self.pool_skip(x), mask) + self.drop_path_attn(att)
        return out + self.drop_path_mlp(
            _masked(self.mlp(_channels_last(self.ln2, out)), mask)
        ), mask


class Projection(nn.Module):
    """Conv1DTransformerProj: conv embedding, stem transformers, strided branch = pyramid."""

    def __init__(self, c):
        super().__init__()
        drop = c.drop_path if c.affine_drop_path else None
        window = c.attn_window
        self.embed = nn.ModuleList(
            ConvModule(c.in_dim if i == 0 else c.dim, c.dim) for i in range(c.embed_layers)
        )
        self.stem = nn.ModuleList(
            TransformerBlock(c.dim, c.heads, 1, window, drop) for _ in range(c.stem_layers)
        )
        self.branch = nn.ModuleList(
            TransformerBlock(c.dim, c.heads, 2, window, drop) for _ in range(c.levels - 1)
        )
        if c.abs_pe:  # use_abs_pe: not in the state dict (OpenTAD's buffer is not persistent)
            table = position_table(c.length, c.dim) / c.dim**0.5
            self.register_buffer("pos_embed", table, persistent=False)
        else:
            self.pos_embed = None

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None):
        """Levels [(B, dim, T_l)]; with a (B, T) `mask`, (levels, [(B, T_l) masks])."""
        for layer in self.embed:
            x = layer(x, mask)
        if self.pos_embed is not None:  # OpenTAD stretches the table to longer inputs
            table = self.pos_embed
            if x.shape[-1] > table.shape[-1]:
                table = F.interpolate(table, x.shape[-1], mode="linear", align_corners=False)
            x = x + _masked(table[:, :, : x.shape[-1]].to(x.dtype), mask)
        masks = [mask]
        for layer in self.stem:
            x = layer(x) if mask is None else layer(x, mask)[0]
        levels = [x]
        for layer in self.branch:
            if mask is None:
                x = layer(x)
            else:
                x, mask = layer(x, mask)
                masks.append(mask)
            levels.append(x)
        return levels if mask is None else (levels, masks)


def position_table(length: int, dim: int) -> torch.Tensor:
    """ActionFormer's sinusoid table (1, dim, length): sin on even, cos on odd channels.

    Computed in float64 and rounded once to float32, as OpenTAD's numpy version does.
    """
    pos = torch.arange(length, dtype=torch.float64)[:, None]
    angle = pos / torch.pow(10000.0, 2 * (torch.arange(dim) // 2).double() / dim)[None, :]
    table = torch.where(torch.arange(dim) % 2 == 0, torch.sin(angle), torch.cos(angle))
    return table.float().T.unsqueeze(0)


class Neck(nn.Module):
    """FPNIdentity: a LayerNorm (eps 1e-6) per pyramid level."""

    def __init__(self, dim: int, levels: int):
        super().__init__()
        self.fpn_norms = nn.ModuleList(nn.LayerNorm(dim, eps=1e-6) for _ in range(levels))

    def forward(self, levels: list[torch.Tensor]) -> list[torch.Tensor]:
        return [_channels_last(n, x) for n, x in zip(self.fpn_norms, levels)]


class Scale(nn.Module):
    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(1.0))


class RpnHead(nn.Module):
    """ActionFormerHead: shared cls / reg conv towers, per-level learned regression scale."""

    def __init__(self, c, num_classes: int):
        super().__init__()
        feat = c.feat_dim or c.dim
        self.cls_convs = nn.ModuleList(
            ConvModule(c.dim if i == 0 else feat, feat) for i in range(c.head_layers)
        )
        self.reg_convs = nn.ModuleList(
            ConvModule(c.dim if i == 0 else feat, feat) for i in range(c.head_layers)
        )
        self.cls_head = nn.Conv1d(feat, num_classes, 3, padding=1)
        self.reg_head = nn.Conv1d(feat, 2, 3, padding=1)
        self.scale = nn.ModuleList(Scale() for _ in range(c.levels))
        # OpenTAD keeps its EMA loss normaliser in the state dict; carried for a 1:1 mapping.
        self.register_buffer("loss_normalizer", torch.tensor(100.0))
        nn.init.constant_(self.cls_head.bias, -math.log((1 - c.prior_prob) / c.prior_prob))

    def forward(
        self, level: int, x: torch.Tensor, mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits (B, K, T) and ReLU(scale * reg) (B, 2, T), in units of the level's stride."""
        cls_feat = reg_feat = x
        for cls_conv, reg_conv in zip(self.cls_convs, self.reg_convs):
            cls_feat, reg_feat = cls_conv(cls_feat, mask), reg_conv(reg_feat, mask)
        reg = F.relu(self.reg_head(reg_feat) * self.scale[level].scale)
        return self.cls_head(cls_feat), reg


class OpenTADHead(nn.Module):
    """projection -> neck -> rpn_head, with `ActionFormerHead`'s interface (models/detector)."""

    def __init__(self, config, num_classes: int):
        super().__init__()
        self.config, self.num_classes = config, num_classes
        self.projection = Projection(config)
        self.neck = Neck(config.dim, config.levels)
        self.rpn_head = RpnHead(config, num_classes)

    def pyramid(self, x: torch.Tensor, valid: torch.Tensor | None = None) -> list[torch.Tensor]:
        """Normalised features of every level: list of (B, dim, length / 2**l)."""
        return self._pyramid(x, valid)[0]

    def _pyramid(self, x, valid):
        if valid is None:
            return self.neck(self.projection(x)), [None] * self.config.levels
        levels, masks = self.projection(x, valid_mask(valid, x.shape[-1]))
        return self.neck(levels), masks

    def forward(
        self, x: torch.Tensor, valid: torch.Tensor | None = None
    ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Per level: class logits (B, T_l, K), start/end offsets in level-0 steps (B, T_l, 2).

        `valid`: (B,) head points holding real input per window (OpenTAD's padding mask), or
        None (every point valid: the unmasked computation).
        """
        logits, offsets = [], []
        levels, masks = self._pyramid(x, valid)
        for level, (f, mask) in enumerate(zip(levels, masks)):
            cls, reg = self.rpn_head(level, f, mask)
            logits.append(cls.transpose(1, 2))
            offsets.append(reg.transpose(1, 2) * 2**level)
        return logits, offsets
