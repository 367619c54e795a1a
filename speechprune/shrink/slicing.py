"""Slice a gated encoder into the physically smaller one it stands for.

``shrink_encoder`` takes the dense ``EncoderSpec``, the student's weights and the final gate
values, and returns the spec and weights of the shrunk encoder: the spec is
``accounting.pruned_spec`` of the gate values, and each part (``method/parts/``) slices its
weights to exactly what that decision keeps, so presence and widths have one owner. Its
output equals the masked model's output (``tests/test_shrink.py``), and its parameter count
is exactly the one ``accounting`` computes for the same gates.

Soft gate values (relaxed gates, ``--no-ste``) are folded into the weights that consume the
gated structure: q rows for query/key dims, v rows for value dims and head gates, out_proj
for the attention block, output_dense columns for FFN units and the FFN block, the next
conv's input columns (or the projection's columns) for CNN channels.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ..io.synth import speechlike
from ..method.gates import GateLayout
from ..method.parts import decide_parts, encoder_parts
from ..model.encoder import Encoder
from ..model.spec import EncoderSpec


def shrink_encoder(
    spec: EncoderSpec, state: dict[str, torch.Tensor], layout: GateLayout, values: torch.Tensor
) -> tuple[EncoderSpec, dict[str, torch.Tensor]]:
    """(shrunk spec, shrunk weights) for the dense ``spec``/``state`` under gate ``values`` (N,)."""
    soft = layout.values(values.detach().cpu().double())
    decided = decide_parts(spec, soft)
    out = {k: v.detach().cpu() for k, v in state.items()}
    for part in encoder_parts(spec):
        part.slice(out, decided.kept, soft)
    return decided.spec, out


def max_relative_error(big: Encoder, masks, small: Encoder, sample_rate: int) -> float:
    """Largest relative difference of any hidden state, masked vs shrunk, on generated speech
    (two utterances of unequal length, with and without a padding mask); inf when any output is
    not finite (Python's ``max`` would silently drop a NaN)."""
    rng = np.random.default_rng(0)
    a, b = speechlike(3.0, sample_rate, rng), speechlike(2.0, sample_rate, rng)
    waveforms = torch.zeros(2, len(a))
    waveforms[0], waveforms[1, : len(b)] = torch.from_numpy(a), torch.from_numpy(b)
    padding = (torch.arange(len(a))[None, :] < torch.tensor([[len(a)], [len(b)]])).long()
    worst = 0.0
    with torch.no_grad():
        for mask in (None, padding):
            expected = big(waveforms, mask, masks)
            got = small(waveforms, mask)
            for x, y in zip(expected.hidden_states + (expected.last_hidden_state,),
                            got.hidden_states + (got.last_hidden_state,)):
                if not (torch.isfinite(x).all() and torch.isfinite(y).all()):
                    return math.inf
                worst = max(worst, ((x - y).abs().max() / x.abs().max().clamp(min=1e-12)).item())
    return worst
