"""Analytic multiply-accumulates (MACs) of one forward pass, from an ``EncoderSpec``.

Counted: every convolution and matrix product, which is where the time goes. Not counted:
norms, activations, softmax, masks and other elementwise work.

Attention is counted at each head's stored width (``LayerSpec.head_widths``), the ideal for
a pruned model. At run time a shrunk layer pads its heads to the layer's widest head, so it
computes at least these MACs; ``bench`` reports efficiency against this ideal.

For T' frames, per transformer layer:
  q, k projections   2 * T' * D * sum(qk widths)
  scores q.k^T       T'^2 * sum(qk widths)            <- quadratic in the input length
  v projection       T' * D * sum(vo widths)
  weights . v        T'^2 * sum(vo widths)            <- quadratic
  out projection     T' * sum(vo widths) * D
  FFN                2 * T' * D * F
The CNN, the feature projection and the positional convolution are linear in the input.
"""

from __future__ import annotations

from .encoder import EncoderSpec

PARTS = ("cnn", "projection", "pos_conv", "attention", "ffn")


def frames(spec: EncoderSpec, samples: int) -> int:
    """Frames T' the CNN makes from ``samples`` (0 when the input is shorter than its receptive field)."""
    for kernel, stride in zip(spec.conv_kernels, spec.conv_strides):
        samples = (samples - kernel) // stride + 1 if samples >= kernel else 0
    return samples


def macs(spec: EncoderSpec, samples: int, batch: int = 1) -> dict[str, int]:
    """MACs of each part (``PARTS``) and their ``total``, for ``batch`` inputs of ``samples`` each."""
    if frames(spec, samples) < 1:
        raise ValueError(f"{samples} samples make no frame; the CNN needs more")
    parts = dict.fromkeys(PARTS, 0)
    length, channels = samples, 1  # conv layer input: (channels, length)
    for out_channels, kernel, stride in zip(spec.conv_channels, spec.conv_kernels, spec.conv_strides):
        length = (length - kernel) // stride + 1
        parts["cnn"] += length * out_channels * channels * kernel
        channels = out_channels
    t, d = length, spec.hidden_size
    parts["projection"] = t * channels * d
    # grouped conv padded by kernel // 2 on both sides: T' + 1 frames for an even kernel (the
    # last one is trimmed, but computed); each output frame reads D / groups channels x kernel
    k = spec.pos_conv_kernel
    parts["pos_conv"] = (t + 2 * (k // 2) - k + 1) * d * (d // spec.pos_conv_groups) * k
    for layer in spec.layers:
        if layer.attention and layer.heads:
            qk_widths, vo_widths = layer.head_widths()
            qk, vo = sum(qk_widths), sum(vo_widths)
            parts["attention"] += 2 * t * d * qk + t * d * vo + t * vo * d + t * t * (qk + vo)
            if spec.num_buckets:  # WavLM's gate on the position bias: Linear(head_dim, 8) per kept head
                parts["attention"] += t * len(layer.heads) * spec.head_dim * 8
        if layer.ffn:
            parts["ffn"] += 2 * t * d * layer.ffn_dim
    parts = {name: count * batch for name, count in parts.items()}
    parts["total"] = sum(parts.values())
    return parts
