"""AdaTAD's temporal-informative adapter (Liu et al., CVPR 2024), as OpenTAD implements it.

An adapter follows a ViT block in the blocks AdaTAD lists in `adapter_index`:

    h = GELU(down_proj(x))                      # (tokens, C) -> (tokens, C * ratio)
    h = h + conv1x1(depthwise_conv_t(h))        # over ALL tubelets of the window, per pixel
    x = x + gamma * up_proj(h)

The depthwise temporal convolution is what makes it "temporal-informative": the ViT sees
one 16-frame chunk at a time, the adapter mixes information across the chunks of the
whole window. So it needs the window's chunks side by side: tokens arrive as
(B * chunks, t * h * w, C) and are regrouped to (B, window_steps, h * w, C), with
`window_steps` fixed by the architecture (OpenTAD's `total_frames // tubelet_size`).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class TemporalAdapter(nn.Module):
    """down_proj -> GELU -> (+ depthwise temporal conv -> 1x1 conv) -> up_proj, x gamma, residual.

    Args:
        dim: token width of the ViT.
        ratio: hidden width as a fraction of `dim` (AdaTAD: 0.25).
        steps: temporal tokens per chunk (chunk_frames / tubelet, 8 for VideoMAE).
        window_steps: temporal tokens per window (window frames / tubelet).
        kernel: depthwise kernel size (AdaTAD: 3).
    """

    def __init__(
        self, dim: int, ratio: float, steps: int, window_steps: int, kernel: int = 3
    ) -> None:
        super().__init__()
        hidden = int(dim * ratio)
        self.steps, self.window_steps = steps, window_steps
        self.down_proj = nn.Linear(dim, hidden)
        self.up_proj = nn.Linear(hidden, dim)
        self.dwconv = nn.Conv1d(hidden, hidden, kernel, padding=kernel // 2, groups=hidden)
        self.conv = nn.Conv1d(hidden, hidden, 1)
        self.gamma = nn.Parameter(torch.ones(1))
        nn.init.zeros_(self.up_proj.weight)  # starts as the identity, as in AdaTAD
        nn.init.zeros_(self.up_proj.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: tokens (B * chunks, steps * hw, C), the chunks of each window consecutive."""
        h = F.gelu(self.down_proj(x))  # (B * chunks, steps * hw, D)
        hw = x.shape[1] // self.steps
        # (B, window_steps, hw, D) -> (B * hw, D, window_steps): one sequence per pixel
        seq = h.reshape(-1, self.window_steps, hw, h.shape[-1]).permute(0, 2, 3, 1)
        seq = self.conv(self.dwconv(seq.flatten(0, 1)))
        seq = seq.unflatten(0, (-1, hw)).permute(0, 3, 1, 2)  # back to (B, T, hw, D)
        h = h + seq.reshape(h.shape)
        return x + self.gamma * self.up_proj(h)
