"""The activation memory one pass of an encoder needs, from its architecture alone, so that
option sizes (``--seconds``, ``--crop-seconds``, ``--batch-seconds``) are checked against the
machine's memory before anything is allocated.

It is a lower bound, in float32: the tensors a pass must hold at once, counted per element, not
what an allocator adds. Attention is counted linear in the frames, as ``scaled_dot_product_attention``
computes it in blocks; norms and small buffers are left out.
"""

from __future__ import annotations

from .spec import EncoderSpec, conv_lengths

FLOAT_BYTES = 4


def activation_bytes(spec: EncoderSpec, samples: int, batch: int, *, training: bool) -> int:
    """Bytes of activations a pass of ``batch`` inputs of ``samples`` holds at its peak.

    Inference: the input, the largest conv layer's input and output with one temporary (its norm
    or activation), or a transformer layer's hidden state, residual, normed copy, q/k/v and FFN
    units, whichever is more, and the hidden states a caller keeps (one per layer).
    Training (``training``): what autograd saves for the backward pass of every layer: each conv
    layer's output, norm and activation; per transformer layer about ten hidden-size and two
    FFN-size values per frame.
    """
    lengths = conv_lengths(spec, samples)
    conv = [channels * length for channels, length in zip(spec.conv_channels, lengths)]  # elements per conv output
    frames, width = lengths[-1], spec.hidden_size
    ffn = max((layer.ffn_dim for layer in spec.layers), default=0)
    kept_states = frames * width * (len(spec.layers) + 1)
    if training:
        per_input = samples + 3 * sum(conv) + len(spec.layers) * frames * (10 * width + 2 * ffn) + kept_states
    else:
        conv_peak = max(before + 2 * after for before, after in zip([samples] + conv, conv))
        per_input = samples + max(conv_peak, frames * (6 * width + ffn)) + kept_states
    return FLOAT_BYTES * batch * per_input
