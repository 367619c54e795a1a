"""Faster paths for eager CPU inference, beside the reference modules of ``layers`` and
computing the same functions (``tests/test_encoder.py`` holds each to its plain path).

``cpu_inference`` is the one rule for when they run. ``InferenceConvLayer`` and
``InferencePositionalConv`` are the modules every encoder is built with (``encoder``), and
what ``bench --cost-model`` times. Part of the self-contained model code (see ``encoder``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .layers import ConvLayer, PositionalConv, _layer_norm


def cpu_inference(x: torch.Tensor) -> bool:
    """Eager float32 inference on a CPU, where the paths below pay (training, GPUs, half
    precision, and graphs being traced for torch.compile or ONNX take the plain path)."""
    return (x.device.type == "cpu" and x.dtype == torch.float32 and not torch.is_grad_enabled()
            and not torch.compiler.is_compiling() and not torch.onnx.is_in_onnx_export())


class InferenceConvLayer(ConvLayer):
    """A conv layer whose norm runs in cache-sized chunks of frames in CPU inference: the GroupNorm
    of layer 0 (one input channel, no input mask) as one pass (``group_norm_conv``), a LayerNorm
    over channels chunk by chunk (``layer_norm_conv``)."""

    def conv_norm_activation(self, x, mask, input_mask):
        if self.norm_kind == "group" and cpu_inference(x):
            return group_norm_conv(x, self.conv, self.layer_norm, self.activation)
        if self.norm_kind == "layer" and cpu_inference(x):
            weight, bias = self.masked_weights(mask, input_mask)
            return layer_norm_conv(x, weight, bias, self.conv.stride[0], self.layer_norm, self.norm_count,
                                   self.activation)
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


CHUNK_BYTES = 1 << 21  # one chunk of (C, frames) activations: stays in a core's cache


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
    chunk = max(64, CHUNK_BYTES // (4 * channels))
    buffer = x.new_empty(channels, chunk)
    for i in range(batch):
        for start in range(0, length, chunk):
            stop = min(start + chunk, length)
            y = torch.addmm(bias[i], weight[i], frames[i, start:stop].T, out=buffer[:, : stop - start])
            out[i, :, start:stop] = _activate_(y, activation)
    return out


def _activate_(y: torch.Tensor, activation: nn.Module) -> torch.Tensor:
    """``activation(y)``, in place where it can be (GELU)."""
    if isinstance(activation, nn.GELU):
        return torch.ops.aten.gelu_(y, approximate=activation.approximate)
    return y.copy_(activation(y))


def layer_norm_conv(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, stride: int, norm: nn.LayerNorm,
                    count: int, activation: nn.Module) -> torch.Tensor:
    """conv -> LayerNorm over channels (as if over ``count`` of them, ``layers._layer_norm``) ->
    activation, with the norm and the activation done in chunks of frames that stay in cache.

    x: (B, C_in, T) -> (B, C, T'), contiguous. The plain path normalises a transposed view of the
    whole (C, T') output and hands the next layer an input stored time-major, which its conv
    reads a third slower; here each chunk of frames is transposed in cache and written back
    channel-major. Layer 0 (one input channel) makes its output chunk by chunk too, as a matmul
    of the frames under the kernel, so its (C, T') activations are written once: 3-6x faster.
    """
    batch, channels = x.shape[0], weight.shape[0]
    chunk = max(16, CHUNK_BYTES // (4 * channels))
    if x.shape[1] == 1:
        frames = x[:, 0].unfold(-1, weight.shape[-1], stride)  # (B, T', K), a view
        w = weight[:, 0].T  # (K, C)
        out = x.new_empty(batch, channels, frames.shape[1])

        def conv_rows(i: int, start: int, stop: int) -> torch.Tensor:  # (frames, C), made here
            return frames[i, start:stop] @ w if bias is None else torch.addmm(bias, frames[i, start:stop], w)
    else:
        out = F.conv1d(x, weight, bias, stride=stride)  # (B, C, T'), normalised in place below

        def conv_rows(i: int, start: int, stop: int) -> torch.Tensor:  # (frames, C), a view of out
            return out[i, :, start:stop].T
    for i in range(batch):
        for start in range(0, out.shape[-1], chunk):
            stop = min(start + chunk, out.shape[-1])
            out[i, :, start:stop] = _activate_(_layer_norm(conv_rows(i, start, stop), norm, count), activation).T
    return out
