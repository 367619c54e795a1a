"""The encoder's building blocks other than attention: the CNN feature extractor, the feature
projection, the positional convolution, the FFN, one transformer layer and the stack of them.

Every block is built from its own sizes (``EncoderSpec``, ``LayerSpec``) and takes the masks of
its structures (``masks``). These are the reference modules, plain on purpose: faster paths for
CPU inference, computing the same function, live beside them in ``inference``. Part of the
self-contained model code (see ``encoder``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .attention import Attention, RelativePositionBias, linear_bias
from .masks import EncoderMasks, LayerMasks
from .spec import EncoderSpec, LayerSpec

ACTIVATIONS = {
    "gelu": nn.GELU,
    "gelu_new": lambda: nn.GELU(approximate="tanh"),
    "relu": nn.ReLU,
    "silu": nn.SiLU,
    "swish": nn.SiLU,
}


def _layer_norm(x: torch.Tensor, norm: nn.LayerNorm, count: int) -> torch.Tensor:
    """LayerNorm over the last axis as if it had ``count`` entries, the missing ones zeros.

    Pruned CNN channels are zeros in the masked model, so the shrunk model must keep
    normalising over the original channel count to stay equal to it.
    """
    kept = x.shape[-1]
    if kept == count:
        return F.layer_norm(x, (kept,), norm.weight, norm.bias, norm.eps)
    mean = x.sum(-1, keepdim=True) / count
    var = ((x - mean).pow(2).sum(-1, keepdim=True) + (count - kept) * mean.pow(2)) / count
    return (x - mean) * torch.rsqrt(var + norm.eps) * norm.weight + norm.bias


def _channel_mask(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    # x: (B, C, T), mask: (C,)
    return x if mask is None else x * mask[:, None].to(x.dtype)


def _binary(mask: torch.Tensor | None) -> torch.Tensor | None:
    return None if mask is None else (mask > 0).to(mask.dtype)


class ConvLayer(nn.Module):
    def __init__(self, spec: EncoderSpec, index: int):
        super().__init__()
        in_channels = spec.conv_channels[index - 1] if index > 0 else 1
        channels = spec.conv_channels[index]
        self.conv = nn.Conv1d(
            in_channels, channels, spec.conv_kernels[index], stride=spec.conv_strides[index], bias=spec.conv_bias
        )
        self.norm_kind = spec.conv_norm if (spec.conv_norm == "layer" or index == 0) else None
        if self.norm_kind == "group":
            self.layer_norm = nn.GroupNorm(channels, channels, affine=True)  # per channel: slicing is exact
        elif self.norm_kind == "layer":
            self.layer_norm = nn.LayerNorm(channels)
        self.norm_count = spec.conv_norm_channels[index]
        self.activation = ACTIVATIONS[spec.conv_act]()
        self.last = index == len(spec.conv_channels) - 1

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None, input_mask: torch.Tensor | None = None):
        # x: (B, C_in, T) -> (B, C, T'). Channel masks act on the weights, not on the large
        # activations (layer 0's output is 512 x 16k frames for 5 s of audio):
        # - input_mask (C_in,), the previous layer's gates, scales the weight columns that read
        #   those channels: a pruned channel is gone wherever it is used, and a soft value is
        #   exactly what shrinking folds into this weight;
        # - where a LayerNorm normalises over channels, a pruned channel must be zero before it
        #   (the shrunk model normalises over the original count with it as a zero), so its
        #   kernel row and bias are zeroed too.
        # The last layer's output feeds the projection's LayerNorm: there pruned channels are
        # zeroed on the activations.
        x = self.conv_norm_activation(x, mask, input_mask)
        return _channel_mask(x, _binary(mask)) if self.last else x

    def masked_weights(self, mask: torch.Tensor | None,
                       input_mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The conv's (weight, bias) with the channel masks folded in (see ``forward``)."""
        weight, bias = self.conv.weight, self.conv.bias
        if input_mask is not None:
            weight = weight * input_mask[None, :, None].to(weight.dtype)
        if mask is not None and self.norm_kind == "layer":
            keep = _binary(mask).to(weight.dtype)
            weight = weight * keep[:, None, None]
            bias = bias * keep if bias is not None else None
        return weight, bias

    def conv_norm_activation(self, x: torch.Tensor, mask: torch.Tensor | None,
                             input_mask: torch.Tensor | None) -> torch.Tensor:
        weight, bias = self.masked_weights(mask, input_mask)
        x = F.conv1d(x, weight, bias, stride=self.conv.stride)
        if self.norm_kind == "group":
            x = self.layer_norm(x)
        elif self.norm_kind == "layer":
            x = _layer_norm(x.transpose(1, 2), self.layer_norm, self.norm_count).transpose(1, 2)
        return self.activation(x)


class FeatureProjection(nn.Module):
    def __init__(self, spec: EncoderSpec):
        super().__init__()
        channels = spec.conv_channels[-1]
        self.norm_count = spec.conv_norm_channels[-1]
        if spec.feat_proj_layer_norm:
            self.layer_norm = nn.LayerNorm(channels, eps=spec.layer_norm_eps)
        self.has_norm = spec.feat_proj_layer_norm
        self.projection = nn.Linear(channels, spec.hidden_size)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        # x: (B, T, C) -> (B, T, D). Pruned channels must stay zero after the norm too.
        if self.has_norm:
            x = _layer_norm(x, self.layer_norm, self.norm_count)
        if mask is not None:  # soft values of the last conv layer's gates act here (foldable)
            x = x * mask.to(x.dtype)
        return self.projection(x)


class PositionalConv(nn.Module):
    """Grouped convolution over time, added to the features (never pruned)."""

    def __init__(self, spec: EncoderSpec):
        super().__init__()
        d = spec.hidden_size
        k = spec.pos_conv_kernel
        self.conv = nn.Conv1d(d, d, k, padding=k // 2, groups=spec.pos_conv_groups)
        if spec.pos_conv_batch_norm:
            self.batch_norm = nn.BatchNorm1d(d)
        else:
            self.batch_norm = None
            self.conv = nn.utils.parametrizations.weight_norm(self.conv, name="weight", dim=2)
        self.trim = 1 if k % 2 == 0 else 0
        self.activation = ACTIVATIONS[spec.conv_act]()

    def weight(self, x: torch.Tensor) -> torch.Tensor:
        """The kernel (weight-normed unless BatchNorm is used) for input ``x``."""
        return self.conv.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.transpose(1, 2)  # (B, D, T)
        if self.batch_norm is not None:
            x = self.batch_norm(x)
        if x.dtype != torch.float32 or torch.is_autocast_enabled(x.device.type):
            # Grouped conv with a 128-wide kernel is ~20x slower in half precision on GPUs than
            # in float32: compute this one op in float32 (same math) and cast back.
            with torch.autocast(device_type=x.device.type, enabled=False):
                conv = self.conv
                y = F.conv1d(x.float(), conv.weight.float(), conv.bias.float(), padding=conv.padding, groups=conv.groups)
            x = y.to(x.dtype if x.dtype != torch.float32 else torch.get_autocast_dtype(x.device.type))
        else:
            x = F.conv1d(x, self.weight(x), self.conv.bias, padding=self.conv.padding, groups=self.conv.groups)
        if self.trim:
            x = x[:, :, : -self.trim]
        return self.activation(x).transpose(1, 2)


class FeatureExtractor(nn.Module):
    def __init__(self, spec: EncoderSpec, conv_layer: type[ConvLayer] = ConvLayer):
        super().__init__()
        self.conv_layers = nn.ModuleList(conv_layer(spec, i) for i in range(len(spec.conv_channels)))

    def forward(self, waveforms: torch.Tensor, masks: EncoderMasks | None) -> torch.Tensor:
        x = waveforms[:, None]  # (B, 1, T_samples)
        previous = None
        for i, conv in enumerate(self.conv_layers):
            mask = masks.get("conv", i) if masks is not None else None
            x = conv(x, mask, previous)
            previous = mask
        return x  # (B, C, T')


class FeedForward(nn.Module):
    def __init__(self, spec: EncoderSpec, layer: LayerSpec):
        super().__init__()
        self.intermediate_dense = nn.Linear(spec.hidden_size, layer.ffn_dim)
        self.intermediate_act_fn = ACTIVATIONS[spec.hidden_act]()
        self.output_dense = nn.Linear(layer.ffn_dim, spec.hidden_size)
        self.units = layer.ffn_dim

    def forward(self, x: torch.Tensor, units: torch.Tensor | None = None) -> torch.Tensor:
        if self.units == 0:  # a kept block without units adds its output bias
            return linear_bias(self.output_dense).expand(*x.shape[:-1], -1).to(x.dtype)
        h = self.intermediate_act_fn(self.intermediate_dense(x))  # (B, T, F)
        if units is not None:
            h = h * units.to(h.dtype)
        return self.output_dense(h)


class EncoderLayer(nn.Module):
    def __init__(self, spec: EncoderSpec, layer: LayerSpec):
        super().__init__()
        d = spec.hidden_size
        self.pre_norm = spec.stable_layer_norm
        self.attention = Attention(spec, layer) if layer.attention else None
        self.feed_forward = FeedForward(spec, layer) if layer.ffn else None
        # Post-LN layers keep both norms whatever is removed; pre-LN norms go with their block.
        if layer.attention or not self.pre_norm:
            self.layer_norm = nn.LayerNorm(d, eps=spec.layer_norm_eps)
        if layer.ffn or not self.pre_norm:
            self.final_layer_norm = nn.LayerNorm(d, eps=spec.layer_norm_eps)

    def forward(self, x, key_mask, position_bias, masks: LayerMasks | None = None) -> torch.Tensor:
        masks = masks if masks is not None else EncoderMasks().layer(0)
        if self.pre_norm:
            if self.attention is not None:
                x = x + _gate(self.attention(self.layer_norm(x), key_mask, position_bias, masks), masks.get("mha"))
            if self.feed_forward is not None:
                x = x + _gate(self.feed_forward(self.final_layer_norm(x), masks.get("int")), masks.get("ffn"))
            return x
        if self.attention is not None:
            x = x + _gate(self.attention(x, key_mask, position_bias, masks), masks.get("mha"))
        x = self.layer_norm(x)
        if self.feed_forward is not None:
            x = x + _gate(self.feed_forward(x, masks.get("int")), masks.get("ffn"))
        return self.final_layer_norm(x)


def _gate(x: torch.Tensor, gate: torch.Tensor | None) -> torch.Tensor:
    return x if gate is None else x * gate.to(x.dtype)


class TransformerEncoder(nn.Module):
    def __init__(self, spec: EncoderSpec, positional_conv: type[PositionalConv] = PositionalConv):
        super().__init__()
        self.pos_conv_embed = positional_conv(spec)
        self.layer_norm = nn.LayerNorm(spec.hidden_size, eps=spec.layer_norm_eps)
        self.pre_norm = spec.stable_layer_norm
        self.rel_pos = RelativePositionBias(spec) if spec.num_buckets else None
        self.layers = nn.ModuleList(EncoderLayer(spec, layer) for layer in spec.layers)

    def forward(self, x, frame_mask, masks: EncoderMasks | None):
        # x: (B, T, D); frame_mask: (B, T) bool or None
        key_mask = None
        if frame_mask is not None:
            x = x * frame_mask[..., None].to(x.dtype)  # padded frames enter as zeros, as in HF
            key_mask = frame_mask[:, None, None, :]  # (B, 1, 1, T)
        x = x + self.pos_conv_embed(x)
        if not self.pre_norm:
            x = self.layer_norm(x)
        position_bias = self.rel_pos(x.shape[1]) if self.rel_pos is not None else None
        hidden_states = [x]
        masks = masks if masks is not None else EncoderMasks()
        for i, layer in enumerate(self.layers):
            x = layer(x, key_mask, position_bias, masks.layer(i))
            hidden_states.append(x)
        last = self.layer_norm(x) if self.pre_norm else x
        return last, tuple(hidden_states)
