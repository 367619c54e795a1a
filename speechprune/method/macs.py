"""Analytic multiply-accumulates (MACs) of one forward pass: of a model (``macs``), and of the
model that gate values stand for (``macs_breakdown``, the currency of ``--macs-sparsity``).

Counted: every convolution and matrix product, which is where the time goes. Not counted:
norms, activations, softmax, masks, padding copies and other elementwise work.

For T' frames, per transformer layer with H heads kept at stored widths qk_h and vo_h:
  q, k projections   2 * T' * D * sum(qk_h)
  v, out projections 2 * T' * D * sum(vo_h)
  scores q.k^T       T'^2 * H * w                 <- quadratic in the input length
  weights . v        T'^2 * H * w                 <- quadratic
  FFN                2 * T' * D * F
where w is the layer's run-time head width (``LayerSpec.runtime_width``: the widest kept head):
the projections run at the stored widths, but SDPA's fused kernels need one width for q, k
and v, so the shrunk model pads each head's activations to w for the attention product
(``model.attention.Attention``). This is what the shrunk runtime computes. The CNN, the
feature projection and the positional convolution are linear in the input. Each part's
terms are its ``macs`` (``method/parts/``).

``macs_breakdown`` is the same count as a closed-form function of gate values, multilinear
like ``accounting.parameter_breakdown``: on keep probabilities it is the expected MACs the
Lagrangian drives to the target. A maximum is not multilinear, so there the quadratic terms
count each head at its own widths, T'^2 * (qk_h + vo_h): the expectation is a slight
under-estimate wherever heads of a layer differ in width. ``pruned_macs`` counts decisions
exactly as the shrunk model runs (``macs`` of ``accounting.pruned_spec``), and the budget
decision checks that exact count.
"""

from __future__ import annotations

import torch

from ..model.spec import EncoderSpec, frames, min_samples
from .accounting import pruned_spec
from .gates import GateValues
from .parts import Frames, cost_terms

PARTS = ("cnn", "projection", "pos_conv", "attention", "ffn")
DEFAULT_MACS_SECONDS = 10.0  # reference input of the MACs budget and of reported MACs: 10 s, batch 1


def _frames(spec: EncoderSpec, samples: int) -> Frames:
    if frames(spec, samples) < 1:
        raise ValueError(f"{samples} samples make no frame; the CNN needs at least {min_samples(spec)}")
    return Frames.of(spec, samples)


def macs(spec: EncoderSpec, samples: int, batch: int = 1) -> dict[str, int]:
    """MACs of each part (``PARTS``) and their ``total``, for ``batch`` inputs of ``samples`` each."""
    counted = _frames(spec, samples)
    parts = dict.fromkeys(PARTS, 0)
    for name, count in cost_terms(spec, None, lambda part, sizes: part.macs(sizes, counted)).items():
        parts[name.split(".")[0]] += count * batch
    parts["total"] = sum(parts.values())
    return parts


def macs_breakdown(spec: EncoderSpec, keep: GateValues, samples: int) -> dict[str, torch.Tensor]:
    """MACs per part for one input of ``samples``, as a multilinear function of the gates.

    Keys: "cnn.c" per conv layer, "projection", "pos_conv", and per transformer layer
    "attention.L.projections", "attention.L.scores" (the T'^2 products) and "ffn.L".
    """
    counted, ref = _frames(spec, samples), keep.flat
    terms = cost_terms(spec, keep, lambda part, sizes: part.macs(sizes, counted))
    return {name: torch.as_tensor(value, dtype=ref.dtype, device=ref.device) for name, value in terms.items()}


def macs_count(spec: EncoderSpec, keep: GateValues, samples: int) -> torch.Tensor:
    """Scalar: expected MACs on keep probabilities (differentiable)."""
    return torch.stack(list(macs_breakdown(spec, keep, samples).values())).sum()


def pruned_macs(spec: EncoderSpec, keep: GateValues, samples: int) -> int:
    """Exact MACs of the shrunk model that decisions (gate values > 0) stand for, as it runs."""
    return macs(pruned_spec(spec, keep), samples)["total"]
