"""Faster paths for eager CPU inference, beside the reference modules of ``layers`` and
computing the same functions (``tests/test_encoder.py`` holds each to its plain path).

``cpu_inference`` is the one rule for when they run. ``InferenceConvLayer`` and
``InferencePositionalConv`` are the modules every encoder is built with (``encoder``), and
what ``bench --cost-model`` times. Part of the self-contained model code (see ``encoder``).
"""

from __future__ import annotations

import torch
from torch import nn

from .layers import ConvLayer, PositionalConv


def cpu_inference(x: torch.Tensor) -> bool:
    """Eager float32 inference on a CPU, where the paths below pay (training, GPUs, half
    precision, and graphs being traced for torch.compile or ONNX take the plain path)."""
    return (x.device.type == "cpu" and x.dtype == torch.float32 and not torch.is_grad_enabled()
            and not torch.compiler.is_compiling() and not torch.onnx.is_in_onnx_export())


class InferenceConvLayer(ConvLayer):
    """A conv layer whose GroupNorm layer (layer 0: one input channel, no input mask) runs as one
    pass in CPU inference (``group_norm_conv``)."""

    def conv_norm_activation(self, x, mask, input_mask):
        if self.norm_kind == "group" and cpu_inference(x):
            return group_norm_conv(x, self.conv, self.layer_norm, self.activation)
        return super().conv_norm_activation(x, mask, input_mask)


class InferencePositionalConv(PositionalConv):
    """The positional convolution with its weight-normed kernel kept in CPU inference until its
    parameters change (normalising a Base model's 768 x 48 x 128 kernel is 7 ms of every pass)."""

    def __init__(self, spec):
        super().__init__(spec)
        self._inference_weight: tuple | None = None  # (versions of the weight-norm parameters, weight)

    def weight(self, x: torch.Tensor) -> torch.Tensor:
        if self.batch_norm is not None or not cpu_inference(x):
            return self.conv.weight
        originals = (self.conv.parametrizations.weight.original0, self.conv.parametrizations.weight.original1)
        if any(p.is_inference() for p in originals):  # made in inference mode: no version counter to watch
            return self.conv.weight
        key = tuple((p._version, p.data_ptr()) for p in originals)
        if self._inference_weight is None or self._inference_weight[0] != key:
            self._inference_weight = (key, self.conv.weight)
        return self._inference_weight[1]


GROUP_NORM_CHUNK_BYTES = 1 << 21  # one chunk of (C, frames) activations: stays in a core's cache


def group_norm_conv(x: torch.Tensor, conv: nn.Conv1d, norm: nn.GroupNorm, activation: nn.Module) -> torch.Tensor:
    """conv -> GroupNorm (one group per channel) -> activation of layer 0, as one pass over its
    output: the same function, 2-3x faster on a CPU, whose time here is the (C, T') activations
    going to memory and back (conv, the norm's statistics, the norm, the activation: five passes).

    x: (B, 1, samples) -> (B, C, T'). Channel c's output at frame t is w_c . f_t + b_c, with f_t
    the K samples under the kernel, so its mean and variance over time follow from the frames'
    K-vector mean and K x K covariance (float64: the variance is a difference), and the norm folds
    into per-input weights and biases. The output is then made in chunks of frames that stay in
    cache, each normalised and activated there, and written once.
    """
    frames = x[:, 0].unfold(-1, conv.kernel_size[0], conv.stride[0])  # (B, T', K), a view
    batch, length, _ = frames.shape
    f = frames.double()
    frame_mean = f.mean(1)  # (B, K)
    covariance = f.transpose(1, 2) @ f / length - frame_mean[:, :, None] * frame_mean[:, None, :]  # (B, K, K)
    w = conv.weight[:, 0].double()  # (C, K)
    b = conv.bias.double() if conv.bias is not None else torch.zeros_like(w[:, 0])  # (C,)
    mean = frame_mean @ w.T + b  # (B, C)
    var = torch.einsum("ck,bkl,cl->bc", w, covariance, w).clamp(min=0)  # (B, C), biased as GroupNorm's
    scale = norm.weight.double() * torch.rsqrt(var + norm.eps)  # (B, C)
    weight = (w * scale[:, :, None]).float()  # (B, C, K)
    bias = (norm.bias.double() + (b - mean) * scale).float()[:, :, None]  # (B, C, 1)

    channels = w.shape[0]
    out = x.new_empty(batch, channels, length)
    chunk = max(64, GROUP_NORM_CHUNK_BYTES // (4 * channels))
    buffer = x.new_empty(channels, chunk)
    for i in range(batch):
        for start in range(0, length, chunk):
            stop = min(start + chunk, length)
            y = torch.addmm(bias[i], weight[i], frames[i, start:stop].T, out=buffer[:, : stop - start])
            if isinstance(activation, nn.GELU):
                torch.ops.aten.gelu_(y, approximate=activation.approximate)
            else:
                y.copy_(activation(y))
            out[i, :, start:stop] = y
    return out
