"""Cross-depth alignment: the loss that recovers a student after blocks were dropped.

The student's kept block with original index i is pulled towards the teacher's block i, so
the blocks before a gap learn to also do the dropped block's work. On top: the task loss,
KL between class scores (temperature-softened), and DIoU between the two regressions at
positive points.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from pbd_deploy.models.actionformer import detection_loss, diou_loss
from pbd_deploy.models.detector import window_valid


@dataclass
class AlignWeights:
    """Weights of the distillation terms (the task loss has weight 1)."""

    feat: float = 1.0
    cls: float = 1.0
    reg: float = 1.0
    temperature: float = 3.5


def class_kl(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """KL(teacher || student) between softened class scores, averaged over points.

    Args:
        student, teacher: logits (P, K). With K == 1 the sigmoid is distilled (binary KL):
            a softmax over one class is identically 1 and would carry no signal.
    """
    s, t = student / temperature, teacher / temperature
    if s.shape[-1] == 1:
        p = torch.sigmoid(t)
        kl = p * (F.logsigmoid(t) - F.logsigmoid(s)) + (1 - p) * (
            F.logsigmoid(-t) - F.logsigmoid(-s)
        )
        return kl.sum(-1).mean()
    log_s, log_t = F.log_softmax(s, -1), F.log_softmax(t, -1)
    return (log_t.exp() * (log_t - log_s)).sum(-1).mean()


def feature_mse(student_blocks, kept, teacher_blocks, teacher_kept) -> torch.Tensor:
    """Mean over the student's blocks of MSE(student block i, teacher block i)."""
    teacher_by_index = dict(zip(teacher_kept, teacher_blocks))
    terms = [F.mse_loss(s, teacher_by_index[i]) for s, i in zip(student_blocks, kept)]
    return torch.stack(terms).mean()


def alignment_loss(student, teacher, weights: AlignWeights, x, cls_t, reg_t, valid):
    """Task loss + cross-depth feature MSE + class KL * T^2 + DIoU to the teacher.

    Args:
        student: the detector being recovered (possibly DDP-wrapped); teacher: frozen.
        x: (B, 3, T, H, W); cls_t (B, N, K), reg_t (B, N, 2), valid (B, N): task targets.
    Returns:
        {"loss", "cls", "reg" (task terms), "feat", "kd_cls", "kd_reg"}.
    """
    points = window_valid(student, valid)  # a masked head masks padded points
    logits, offsets, blocks = student(x, return_blocks=True, valid=points)
    with torch.no_grad():
        t_logits, t_offsets, t_blocks = teacher(x, return_blocks=True, valid=points)
    losses = detection_loss(logits, offsets, cls_t, reg_t, valid)
    kept = getattr(student, "module", student).config.backbone.block_indices
    feat = feature_mse(blocks, kept, t_blocks, teacher.config.backbone.block_indices)
    kd_cls = class_kl(logits[valid], t_logits[valid], weights.temperature)
    kd_cls = kd_cls * weights.temperature**2
    positive = (cls_t.sum(-1) > 0) & valid
    if positive.any():
        kd_reg = diou_loss(offsets[positive], t_offsets[positive]).mean()
    else:
        kd_reg = offsets.sum() * 0
    total = losses["loss"] + weights.feat * feat + weights.cls * kd_cls + weights.reg * kd_reg
    return {**losses, "feat": feat, "kd_cls": kd_cls, "kd_reg": kd_reg, "loss": total}
