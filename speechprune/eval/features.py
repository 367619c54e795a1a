"""Features of a frozen encoder for probes: every hidden state (0 = input of layer 1, k = output
of layer k), layer-normed per frame (no affine), mean-pooled over real frames per clip
(``FrozenFeatures.pooled``) or kept per frame (``FrozenFeatures.frames``).

Computed under ``torch.inference_mode`` with the model in eval mode, in batches of clips of
similar length (``clip_batches``). This module is library code: it knows nothing of the command
line.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..io.batches import Batch, collate


def clip_batches(
    clips: list[np.ndarray], *, batch_seconds: float, sampling_rate: int, normalize: bool, same_length: bool = False
) -> list[tuple[list[int], Batch]]:
    """Group ``clips`` (1-D float32 at ``sampling_rate``) into right-padded batches: (indices into clips, Batch).

    Clips are sorted by length, longest first (ties by index), so that each batch holds clips of
    similar length; a batch takes clips while (clips x longest) stays within ``batch_seconds``
    (always at least one). With ``normalize`` each clip is scaled to zero mean and unit variance
    over its real samples, as the models' feature extractors do. With ``same_length`` a batch only
    holds clips of exactly equal length (no padding at all; see ``FrozenFeatures``).
    """
    groups = batch_groups([len(clip) for clip in clips], batch_seconds=batch_seconds, sampling_rate=sampling_rate,
                          same_length=same_length)
    return [(group, collate([clips[i] for i in group], len(clips[group[0]]), sampling_rate, normalize))
            for group in groups]


def batch_groups(lengths: list[int], *, batch_seconds: float, sampling_rate: int, same_length: bool = False) -> list[list[int]]:
    """The grouping ``clip_batches`` makes, from the clips' lengths in samples alone (nothing is read)."""
    if batch_seconds <= 0:
        raise ValueError(f"batch_seconds must be positive, got {batch_seconds}")
    capacity = batch_seconds * sampling_rate  # padded samples per batch
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    groups: list[list[int]] = []
    for i in order:
        if groups:
            group = groups[-1]
            longest = lengths[group[0]]
            if (len(group) + 1) * longest <= capacity and (not same_length or lengths[i] == longest):
                group.append(i)
                continue
        groups.append([i])
    return groups


@dataclass(frozen=True)
class FrozenFeatures:
    """The hidden states of a frozen encoder for lists of clips: pooled per clip (``pooled``) or
    kept per frame (``frames``), both from the same batches (``clip_batches``).

    ``model`` is what ``folders.target.load_target`` returns (anything with ``.encode(waveforms,
    attention_mask, masks)``, ``.frame_mask`` and ``.spec``); ``masks`` are a prune run's masks.
    The attention mask is passed only with ``attention_mask`` (``Target.attention_mask``: how the
    model was trained). Models with one batch padded clips (real frames do not depend on the
    padding); models without one batch only clips of equal length, so padding never changes a
    clip's features either. ``progress`` gets about ten lines per call.
    """

    model: Any
    attention_mask: bool
    normalize: bool
    sampling_rate: int
    masks: Any = None  # model.masks.EncoderMasks of a prune run
    batch_seconds: float = 32.0  # padded audio per forward pass
    device: Any = "cpu"
    progress: Callable[[str], None] | None = None

    def pooled(self, clips: list[np.ndarray]) -> np.ndarray:
        """(N, L + 1, D) float32: per clip and hidden state, the mean over real frames of the
        per-frame layer-normed state (``F.layer_norm(h, (D,))``, no affine)."""
        spec = self.model.spec
        out = np.zeros((len(clips), len(spec.layers) + 1, spec.hidden_size), dtype=np.float32)
        for indices, states, real in self._batches(clips):
            weight = real.float()[..., None]  # (B, T', 1)
            frames = weight.sum(1).clamp(min=1.0)  # (B, 1)
            pooled = torch.stack([(h * weight).sum(1) / frames for h in states], dim=1)  # (B, L + 1, D)
            out[indices] = pooled.cpu().numpy()
        return out

    def frames(self, clips: list[np.ndarray]) -> list[np.ndarray]:
        """Per clip, (L + 1, T_real, D) float16: the layer-normed hidden states of its real frames.

        Memory is (L + 1) x D x 2 bytes per frame (13 x 768 x 2 = 20 kB for a Base model, 50
        frames a second): keep the audio to what fits.
        """
        out: list[np.ndarray | None] = [None] * len(clips)
        for indices, states, real in self._batches(clips):
            stacked = torch.stack(states, dim=1).half().cpu()  # (B, L + 1, T', D)
            lengths = real.sum(1).tolist()  # real frames are a prefix of each row
            for row, i in enumerate(indices):
                out[i] = stacked[row, :, : lengths[row]].numpy().copy()  # (L + 1, T_real, D)
        return out  # type: ignore[return-value]

    def _batches(self, clips: list[np.ndarray]):
        """Yield (indices, hidden states, real frames) per batch: states are L + 1 tensors (B, T', D)
        on the device, layer-normed per frame; real is (B, T') bool."""
        if len(clips) == 0:
            return
        model = self.model
        if hasattr(model, "eval"):
            model.eval()
        device = torch.device(self.device)
        # Without an attention mask the padding is part of the input (Base-style models normalise the
        # first conv layer over time), so such models only batch clips of equal length: every clip's
        # features are then what it gives alone, whatever the batch size and the other clips.
        batches = clip_batches(clips, batch_seconds=self.batch_seconds, sampling_rate=self.sampling_rate,
                               normalize=self.normalize, same_length=not self.attention_mask)
        with torch.inference_mode():
            for number, (indices, batch) in enumerate(batches, start=1):
                if self.progress and (number == len(batches) or number % max(1, len(batches) // 10) == 0):
                    self.progress(f"features: batch {number}/{len(batches)}")  # about ten lines in all
                waveforms = batch.waveforms.to(device)  # (B, T)
                attention = batch.attention_mask.to(device)  # (B, T)
                out = model.encode(waveforms, attention if self.attention_mask else None, self.masks)
                real = model.frame_mask(attention, out.last_hidden_state.shape[1])  # (B, T') bool
                states = [F.layer_norm(h.float(), (h.shape[-1],)) for h in out.hidden_states]  # L + 1 x (B, T', D)
                yield indices, states, real
