"""Layer-to-layer distillation from the frozen dense teacher."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class DistillHeads(nn.Module):
    """One linear map per distilled layer, from student to teacher space, starting as identity.

    They give the student room to represent a layer in a rotated/scaled basis; they are
    dropped when the model is shrunk.
    """

    def __init__(self, hidden_size: int, layers: list[int]):
        super().__init__()
        self.layers = list(layers)
        self.maps = nn.ModuleList(nn.Linear(hidden_size, hidden_size) for _ in layers)
        with torch.no_grad():
            for linear in self.maps:
                linear.weight.copy_(torch.eye(hidden_size))
                linear.bias.zero_()


def distill_loss(
    student_states: tuple[torch.Tensor, ...],
    teacher_states: tuple[torch.Tensor, ...],
    heads: DistillHeads,
    weights: list[float],
    frame_mask: torch.Tensor | None,
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Sum over pairs of weight * (L1 distance - cosine similarity), averaged over real frames.

    States are indexed like transformers' ``hidden_states``: 0 is the input of the first
    layer, i the output of layer i. Returns the total and the per-pair losses.
    """
    per_pair = []
    for layer, linear, weight in zip(heads.layers, heads.maps, weights):
        prediction = linear(student_states[layer])  # (B, T, D)
        target = teacher_states[layer].to(prediction.dtype)
        l1 = (prediction - target).abs().mean(-1)  # (B, T)
        cosine = F.cosine_similarity(prediction.float(), target.float(), dim=-1)  # (B, T)
        per_frame = l1.float() - cosine
        if frame_mask is None:
            loss = per_frame.mean()
        else:
            m = frame_mask.to(per_frame.dtype)
            loss = (per_frame * m).sum() / m.sum().clamp(min=1)
        per_pair.append(weight * loss)
    return torch.stack(per_pair).sum(), per_pair
