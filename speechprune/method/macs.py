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
where w = max(all qk_h, vo_h) is the layer's run-time head width: the projections run at the
stored widths, but SDPA's fused kernels need one width for q, k and v, so the shrunk model
pads each head's activations to w for the attention product (``model.attention.Attention``). This is
what the shrunk runtime computes. The CNN, the feature projection and the positional
convolution are linear in the input.

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

from ..model.spec import EncoderSpec, conv_lengths, frames, min_samples
from .accounting import AttentionGates, pruned_spec
from .gates import GateValues

PARTS = ("cnn", "projection", "pos_conv", "attention", "ffn")
DEFAULT_MACS_SECONDS = 10.0  # reference input of the MACs budget and of reported MACs: 10 s, batch 1


def _pos_conv_macs(spec: EncoderSpec, t: int) -> int:
    # grouped conv padded by kernel // 2 on both sides: T' + 1 frames for an even kernel (the
    # last one is trimmed, but computed); each output frame reads D / groups channels x kernel
    k, d = spec.pos_conv_kernel, spec.hidden_size
    return (t + 2 * (k // 2) - k + 1) * d * (d // spec.pos_conv_groups) * k


def _check_frames(spec: EncoderSpec, samples: int) -> None:
    if frames(spec, samples) < 1:
        raise ValueError(f"{samples} samples make no frame; the CNN needs at least {min_samples(spec)}")


def macs(spec: EncoderSpec, samples: int, batch: int = 1) -> dict[str, int]:
    """MACs of each part (``PARTS``) and their ``total``, for ``batch`` inputs of ``samples`` each."""
    _check_frames(spec, samples)
    parts = dict.fromkeys(PARTS, 0)
    channels = 1  # conv layer input: the waveform
    lengths = conv_lengths(spec, samples)
    for length, out_channels, kernel in zip(lengths, spec.conv_channels, spec.conv_kernels):
        parts["cnn"] += length * out_channels * channels * kernel
        channels = out_channels
    t, d = lengths[-1], spec.hidden_size
    parts["projection"] = t * channels * d
    parts["pos_conv"] = _pos_conv_macs(spec, t)
    for layer in spec.layers:
        if layer.attention and layer.heads:
            qk_widths, vo_widths = layer.head_widths()
            width = max(layer.qk_dim, layer.vo_dim)  # the run-time width of every head
            parts["attention"] += 2 * t * d * (sum(qk_widths) + sum(vo_widths)) + 2 * t * t * len(layer.heads) * width
            if spec.num_buckets:  # WavLM's gate on the position bias: Linear(head_dim, 8) per kept head
                parts["attention"] += t * len(layer.heads) * spec.head_dim * 8
        if layer.ffn:
            parts["ffn"] += 2 * t * d * layer.ffn_dim
    parts = {name: count * batch for name, count in parts.items()}
    parts["total"] = sum(parts.values())
    return parts


def macs_breakdown(spec: EncoderSpec, keep: GateValues, samples: int) -> dict[str, torch.Tensor]:
    """MACs per component for one input of ``samples``, as a multilinear function of the gates.

    Keys: "cnn.c" per conv layer, "projection", "pos_conv", and per transformer layer
    "attention.L" (projections), "scores.L" (the T'^2 products) and "ffn.L".
    """
    _check_frames(spec, samples)
    ref = keep.flat
    parts: dict[str, torch.Tensor] = {}
    lengths = conv_lengths(spec, samples)
    previous = torch.ones((), dtype=ref.dtype, device=ref.device)  # the waveform: one input channel
    for c, (length, channels, kernel) in enumerate(zip(lengths, spec.conv_channels, spec.conv_kernels)):
        kept = keep.value("conv", c, channels).sum()
        parts[f"cnn.{c}"] = length * kernel * kept * previous
        previous = kept
    t, d = lengths[-1], spec.hidden_size
    parts["projection"] = t * d * previous
    parts["pos_conv"] = torch.tensor(float(_pos_conv_macs(spec, t)), dtype=ref.dtype, device=ref.device)
    for l, layer in enumerate(spec.layers):
        gates = AttentionGates.of(spec, keep, l)
        dims = gates.qk_dims + gates.vo_dims
        parts[f"attention.{l}"] = 2 * t * d * dims
        if spec.num_buckets:
            parts[f"attention.{l}"] = parts[f"attention.{l}"] + t * spec.head_dim * 8 * gates.present.sum()
        parts[f"scores.{l}"] = t * t * dims
        parts[f"ffn.{l}"] = 2 * t * d * keep.value("ffn", l) * keep.value("int", l, layer.ffn_dim).sum()
    return parts


def macs_count(spec: EncoderSpec, keep: GateValues, samples: int) -> torch.Tensor:
    """Scalar: expected MACs on keep probabilities (differentiable)."""
    return torch.stack(list(macs_breakdown(spec, keep, samples).values())).sum()


def pruned_macs(spec: EncoderSpec, keep: GateValues, samples: int) -> int:
    """Exact MACs of the shrunk model that decisions (gate values > 0) stand for, as it runs."""
    return macs(pruned_spec(spec, keep), samples)["total"]
