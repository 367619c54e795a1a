"""How close a student's hidden states are to a teacher's: cosine, L1 and linear CKA per layer.

All three are streamed over batches and taken over real (unpadded) frames only. Linear CKA
(Kornblith et al. 2019) compares the two layers' frame-by-feature matrices X, Y after centring:
||Y^T X||_F^2 / (||X^T X||_F ||Y^T Y||_F); it is kept as D x D sums, so memory does not grow
with the amount of audio. One forward pass per model and batch.
"""

from __future__ import annotations

import numpy as np
import torch

from ..errors import ModelError


def require_finite(values, what: str) -> None:
    """Refuse NaN or infinite model outputs (a tensor or an array) instead of averaging them into a report."""
    finite = values.isfinite().all() if isinstance(values, torch.Tensor) else np.isfinite(values).all()
    if not finite:
        raise ModelError(
            f"{what} gives NaN or infinite values: its weights are damaged (a diverged run or a broken file); "
            "use intact weights"
        )


class _Cka:
    def __init__(self, dx: int, dy: int):
        self.n = 0.0
        self.sx = torch.zeros(dx, dtype=torch.float64)
        self.sy = torch.zeros(dy, dtype=torch.float64)
        self.xx = torch.zeros(dx, dx, dtype=torch.float64)
        self.yy = torch.zeros(dy, dy, dtype=torch.float64)
        self.yx = torch.zeros(dy, dx, dtype=torch.float64)

    def add(self, x: torch.Tensor, y: torch.Tensor) -> None:  # (N, D) real frames
        x, y = x.double().cpu(), y.double().cpu()
        self.n += x.shape[0]
        self.sx += x.sum(0)
        self.sy += y.sum(0)
        self.xx += x.T @ x
        self.yy += y.T @ y
        self.yx += y.T @ x

    def value(self) -> float:
        n = max(self.n, 1.0)
        mx, my = self.sx / n, self.sy / n
        xx = self.xx - n * torch.outer(mx, mx)
        yy = self.yy - n * torch.outer(my, my)
        yx = self.yx - n * torch.outer(my, mx)
        denominator = float(xx.norm() * yy.norm())
        return float(yx.norm() ** 2) / denominator if denominator > 0 else 0.0


def compare_hidden_states(student, teacher, batches, *, student_mask: bool, teacher_mask: bool, device,
                          student_masks=None, teacher_masks=None, progress=None) -> dict:
    """Per hidden state (0 = input of layer 1, k = output of layer k): cosine, L1, CKA of student vs teacher.

    ``student_masks`` (EncoderMasks) multiply the student's structures: a prune run's masks, so that
    the masked student is compared, not the dense model it was pruned from; ``teacher_masks`` the same
    for the teacher (a quantized prune run is compared with the same run in float32).
    """
    n_states = len(student.spec.layers) + 1
    cos_sum = [0.0] * n_states
    l1_sum = [0.0] * n_states
    cka = [_Cka(student.spec.hidden_size, teacher.spec.hidden_size) for _ in range(n_states)]
    frames_total = 0.0
    with torch.no_grad():
        for index, batch in enumerate(batches):
            if progress and (index + 1 == len(batches) or (index + 1) % max(1, len(batches) // 10) == 0):
                progress(f"teacher comparison: batch {index + 1}/{len(batches)}")  # about ten lines in all
            waveforms, attention = batch.waveforms.to(device), batch.attention_mask.to(device)
            got = student.encode(waveforms, attention if student_mask else None, student_masks)
            expected = teacher.encode(waveforms, attention if teacher_mask else None, teacher_masks)
            real = student.frame_mask(attention, got.last_hidden_state.shape[1])  # (B, T)
            frames_total += float(real.sum())
            for k in range(n_states):
                x, y = got.hidden_states[k], expected.hidden_states[k]
                require_finite(x, "the model")
                require_finite(y, "the teacher")
                cos_sum[k] += float((torch.nn.functional.cosine_similarity(x, y, dim=-1) * real).sum())
                l1_sum[k] += float(((x - y).abs().mean(-1) * real).sum())
                cka[k].add(x[real], y[real])
    n = max(frames_total, 1.0)
    return {
        "cosine": [round(c / n, 6) for c in cos_sum],
        "l1": [round(v / n, 6) for v in l1_sum],
        "cka": [round(c.value(), 6) for c in cka],
        "frames": int(frames_total),
        "passes": {"student_forward": len(batches), "teacher_forward": len(batches)},
    }
