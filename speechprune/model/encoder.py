"""The speech encoder that speechprune trains, masks and (later) ships.

One implementation covers wav2vec 2.0, HuBERT and WavLM in Base style (GroupNorm in the
first conv layer, post-LN transformer) and Large style (LayerNorm in every conv layer,
pre-LN transformer). Parameter names match the Hugging Face ``...Model`` classes, so their
state dicts load unchanged (WavLM's relative-position table being the one rename, see
``families``).

Two things it does that the stock classes do not:

* every prunable structure can be multiplied by a mask (``EncoderMasks``): CNN channels,
  whole attention blocks, heads, per-head query/key and value/output dimensions, whole FFN
  blocks and FFN units;
* every layer is built from its own sizes (``LayerSpec``), so a pruned model with uneven
  layers is the same class with other numbers.

This module imports only torch and the standard library on purpose: it must be copyable
into a model folder and run without speechprune installed.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

# True while torch.export traces the model (ONNX export); older torch releases without the query: False
_is_exporting = getattr(torch.compiler, "is_exporting", lambda: False)

ACTIVATIONS = {
    "gelu": nn.GELU,
    "gelu_new": lambda: nn.GELU(approximate="tanh"),
    "relu": nn.ReLU,
    "silu": nn.SiLU,
    "swish": nn.SiLU,
}


@dataclass
class LayerSpec:
    """Sizes of one transformer layer. A dense layer keeps every head at full width."""

    heads: list[int]  # original ids of the kept heads, in order (WavLM's position bias is keyed by them)
    qk_dim: int  # query/key width per head at run time (the widest kept head)
    vo_dim: int  # value/output width per head at run time
    ffn_dim: int  # FFN intermediate units
    attention: bool = True  # False: the attention block is gone, its residual branch is the identity
    ffn: bool = True  # False: the FFN block is gone
    # Stored width of each head when heads differ (None: every head has qk_dim / vo_dim).
    # Weights store exactly these rows; narrower heads are zero-padded to qk_dim / vo_dim
    # when attention runs, which changes no output.
    qk_dims: list[int] | None = None
    vo_dims: list[int] | None = None

    def head_widths(self) -> tuple[list[int], list[int]]:
        h = len(self.heads)
        return (self.qk_dims or [self.qk_dim] * h, self.vo_dims or [self.vo_dim] * h)


@dataclass
class EncoderSpec:
    """Everything needed to build an ``Encoder``: the architecture, not the weights."""

    family: str  # "wav2vec2" | "hubert" | "wavlm"
    hidden_size: int
    num_heads: int  # heads of the dense model
    head_dim: int  # head width of the dense model; attention scale is head_dim ** -0.5, always
    conv_channels: list[int]
    conv_kernels: list[int]
    conv_strides: list[int]
    conv_bias: bool
    conv_norm: str  # "group": GroupNorm in conv layer 0 only; "layer": LayerNorm in every conv layer
    conv_act: str
    hidden_act: str
    layer_norm_eps: float
    stable_layer_norm: bool  # True: pre-LN layers + final LayerNorm (Large style)
    feat_proj_layer_norm: bool
    pos_conv_kernel: int
    pos_conv_groups: int
    pos_conv_batch_norm: bool  # HuBERT variants with BatchNorm instead of weight norm
    masked_spec_embed: bool
    layers: list[LayerSpec]
    # Channel counts the conv LayerNorms normalise over: the dense model's, also after pruning.
    conv_norm_channels: list[int] = field(default_factory=list)
    num_buckets: int = 0  # WavLM relative position buckets (0: no relative position bias)
    max_distance: int = 0
    # WavLM: original heads the bias table keeps; [] when no head is kept anywhere. None (not
    # given, as in specs written before this field) means every head.
    rel_heads: list[int] | None = None

    def __post_init__(self):
        self.layers = [LayerSpec(**l) if isinstance(l, dict) else l for l in self.layers]
        if not self.conv_norm_channels:
            self.conv_norm_channels = list(self.conv_channels)
        if self.rel_heads is None:
            self.rel_heads = list(range(self.num_heads)) if self.num_buckets else []

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "EncoderSpec":
        return cls(**data)

    def output_lengths(self, input_lengths: torch.Tensor) -> torch.Tensor:
        """Frames the CNN makes from ``input_lengths`` samples (floor division, as HF)."""
        for kernel, stride in zip(self.conv_kernels, self.conv_strides):
            input_lengths = torch.div(input_lengths - kernel, stride, rounding_mode="floor") + 1
        return input_lengths


@dataclass
class LayerMasks:
    """Multipliers of one transformer layer; None means "all ones" (structure not gated)."""

    mha: torch.Tensor | None = None  # ()
    head: torch.Tensor | None = None  # (H,)
    qk: torch.Tensor | None = None  # (H, d_qk)
    vo: torch.Tensor | None = None  # (H, d_vo)
    ffn: torch.Tensor | None = None  # ()
    units: torch.Tensor | None = None  # (F,)


@dataclass
class EncoderMasks:
    conv: list[torch.Tensor | None]  # per conv layer, (C_c,)
    layers: list[LayerMasks]


@dataclass
class EncoderOutput:
    last_hidden_state: torch.Tensor  # (B, T', D)
    hidden_states: tuple[torch.Tensor, ...]  # L + 1 tensors: the input of layer 1, then each layer's output
    frame_mask: torch.Tensor | None  # (B, T') bool, True on real frames; None when no attention_mask


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
        weight, bias = self.conv.weight, self.conv.bias
        if input_mask is not None:
            weight = weight * input_mask[None, :, None].to(weight.dtype)
        if mask is not None and self.norm_kind == "layer":
            keep = _binary(mask).to(weight.dtype)
            weight = weight * keep[:, None, None]
            bias = bias * keep if bias is not None else None
        x = F.conv1d(x, weight, bias, stride=self.conv.stride)
        if self.norm_kind == "group":
            x = self.layer_norm(x)
        elif self.norm_kind == "layer":
            x = _layer_norm(x.transpose(1, 2), self.layer_norm, self.norm_count).transpose(1, 2)
        x = self.activation(x)
        return _channel_mask(x, _binary(mask)) if self.last else x


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
            x = self.conv(x)
        if self.trim:
            x = x[:, :, : -self.trim]
        return self.activation(x).transpose(1, 2)


class Attention(nn.Module):
    """Multi-head self-attention with per-layer head count and q/k and v/o widths.

    The projections are called as modules at their stored widths (the sum of the kept
    per-head widths), so they cost exactly what is stored and torch's quantized replacements
    of nn.Linear drop in. Only the activations are padded, to one run-time width per layer:
    SDPA's fused CPU and GPU kernels need q, k and v of equal widths, and are ~4x faster than
    the unfused path they otherwise fall back to. A dense layer is never copied for it.

    The scale is the dense model's head_dim ** -0.5 whatever width is kept: masked query
    dims only drop terms from q.k, they do not change its scale.
    """

    def __init__(self, spec: EncoderSpec, layer: LayerSpec):
        super().__init__()
        d = spec.hidden_size
        self.num_heads = len(layer.heads)
        self.qk_dim = self.vo_dim = max(layer.qk_dim, layer.vo_dim)  # the run-time width w of every head
        self.scaling = spec.head_dim**-0.5
        self.heads = list(layer.heads)
        qk_widths, vo_widths = layer.head_widths()
        self.q_proj = nn.Linear(d, sum(qk_widths))
        self.k_proj = nn.Linear(d, sum(qk_widths))
        self.v_proj = nn.Linear(d, sum(vo_widths))
        self.out_proj = nn.Linear(sum(vo_widths), d)
        # Column indices, None where every head already has the run-time width: "qk"/"vo",
        # for each slot of the padded (H * w) layout, the stored column it reads (sum(widths):
        # the zero column); "out", for each stored v/o column, its slot in the padded layout.
        self.slots = {
            "qk": _padding_slots(qk_widths, self.qk_dim),
            "vo": _padding_slots(vo_widths, self.vo_dim),
            "out": _stored_slots(vo_widths, self.vo_dim),
        }
        self._index_tensors: dict[str, torch.Tensor] = {}
        self.gated_bias = spec.num_buckets > 0
        if self.gated_bias:  # WavLM's gate on the relative position bias
            self.dense_heads = spec.num_heads
            self.gru_rel_pos_const = nn.Parameter(torch.ones(1, self.num_heads, 1, 1))
            self.gru_rel_pos_linear = nn.Linear(spec.head_dim, 8)
            self.all_heads = self.heads == list(range(spec.num_heads))
            self.bias_rows = [spec.rel_heads.index(h) for h in self.heads]

    def forward(
        self,
        x: torch.Tensor,
        key_mask: torch.Tensor | None,
        position_bias: torch.Tensor | None,
        masks: LayerMasks | None = None,
    ) -> torch.Tensor:
        # x: (B, T, D); key_mask: (B, 1, 1, T) bool, True = attend; position_bias: (H_rel, T, T)
        b, t, _ = x.shape
        if self.num_heads == 0:  # a kept block without heads adds its output bias
            return linear_bias(self.out_proj).expand(b, t, -1).to(x.dtype)
        q, k, v, attn_mask = self.inputs(x, key_mask, position_bias, masks)
        o = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, scale=self.scaling)  # (B, H, T, w)
        o = o.transpose(1, 2)  # (B, T, H, w): the layout SDPA's fused kernels write, so no copy is made here
        if _is_exporting():  # export's decompositions may assume other strides: copy explicitly
            o = o.clone(memory_format=torch.contiguous_format)
        o = o.reshape(b, t, self.num_heads * self.vo_dim)  # (B, T, H * w)
        if self.slots["out"] is not None:  # drop the padded slots (zeros): back to the stored columns
            o = o.index_select(-1, self._index("out", o.device))  # (B, T, sum of stored v/o widths)
        return self.out_proj(o)

    def inputs(self, x, key_mask, position_bias, masks: LayerMasks | None = None):
        """(q, k, v, attn_mask) as attention consumes them: masked, at the run-time width, with
        the padding mask and WavLM's gated position bias merged into ``attn_mask``."""
        q = self._per_head(self.q_proj(x), "qk")  # (B, H, T, w)
        k = self._per_head(self.k_proj(x), "qk")  # (B, H, T, w)
        v = self._per_head(self.v_proj(x), "vo")  # (B, H, T, w)
        if masks is not None:  # gates of a shrunk model cover its stored widths: the padded slots are zeros
            if masks.qk is not None:  # masking q alone is enough: q.k sums over kept dims only
                q = q * _to_width(masks.qk, q.shape[-1])[:, None, :].to(q.dtype)
            v_mask = _head_value_mask(masks)
            if v_mask is not None:
                v = v * _to_width(v_mask, v.shape[-1])[:, None, :].to(v.dtype)
        attn_mask = key_mask
        if self.gated_bias:
            attn_mask = self._gated_position_bias(x, position_bias)  # (B, H, T, T)
            if key_mask is not None:
                attn_mask = attn_mask.masked_fill(~key_mask, float("-inf"))
        return q, k, v, attn_mask

    def _per_head(self, y: torch.Tensor, kind: str) -> torch.Tensor:
        """(B, T, sum of stored widths) -> (B, H, T, w), narrower heads zero-padded to w."""
        b, t, _ = y.shape
        if self.slots[kind] is not None:
            y = F.pad(y, (0, 1)).index_select(-1, self._index(kind, y.device))  # (B, T, H * w)
        return y.view(b, t, self.num_heads, self.qk_dim).transpose(1, 2)

    def output_weight(self) -> torch.Tensor:
        """out_proj's weight (D, H * w) at the run-time width: zero columns for padded slots."""
        weight = self.out_proj.weight  # (D, sum of stored v/o widths)
        if self.slots["vo"] is None:
            return weight
        return F.pad(weight, (0, 1))[:, self._index("vo", weight.device)]

    def _index(self, kind: str, device: torch.device) -> torch.Tensor:
        key = f"{kind}:{device}"
        if key not in self._index_tensors:  # built on first use: from_pretrained creates modules on "meta"
            self._index_tensors[key] = torch.tensor(self.slots[kind], device=device)
        return self._index_tensors[key]

    def _gated_position_bias(self, x: torch.Tensor, position_bias: torch.Tensor) -> torch.Tensor:
        # WavLM: head h's gate reads the h-th head_dim-wide slice of the layer input (not the
        # query), so it stays keyed to the original head id after pruning.
        b, t, _ = x.shape
        chunks = x.view(b, t, self.dense_heads, -1)  # (B, T, H_dense, head_dim)
        bias = position_bias
        if not self.all_heads:
            chunks = chunks[:, :, self.heads]
            bias = position_bias[self.bias_rows]
        proj = self.gru_rel_pos_linear(chunks.permute(0, 2, 1, 3))  # (B, H, T, 8)
        gate_a, gate_b = torch.sigmoid(proj.view(b, self.num_heads, t, 2, 4).sum(-1)).chunk(2, dim=-1)
        gate = gate_a * (gate_b * self.gru_rel_pos_const - 1.0) + 2.0  # (B, H, T, 1)
        return gate * bias.to(x.dtype)


def linear_bias(linear: nn.Module) -> torch.Tensor:
    """The bias of a Linear layer, also of torch's quantized replacements (where it is a method).

    Layers whose input width is pruned to zero only add their bias: they are never called,
    because quantized kernels do not support an empty reduction.
    """
    bias = linear.bias
    return bias() if callable(bias) else bias


def _padding_slots(widths: list[int], width: int) -> list[int] | None:
    """For heads stored at ``widths``, the stored column of each slot of a (H * width) padded
    layout; ``sum(widths)`` marks a zero slot. None when no padding is needed."""
    if all(w == width for w in widths):
        return None
    slots, start = [], 0
    for w in widths:
        slots += list(range(start, start + w)) + [sum(widths)] * (width - w)
        start += w
    return slots


def _stored_slots(widths: list[int], width: int) -> list[int] | None:
    """For heads stored at ``widths``, the slot in the (H * width) padded layout of each stored
    column, in order. None when no padding is needed."""
    if all(w == width for w in widths):
        return None
    return [h * width + j for h, w in enumerate(widths) for j in range(w)]


def _to_width(mask: torch.Tensor, width: int) -> torch.Tensor:
    """(H, n) per-dim multipliers -> (H, width): slots past n (padding, zeros) get 0; (H, 1) broadcasts."""
    n = mask.shape[-1]
    return mask if n in (1, width) else F.pad(mask, (0, width - n))


def _head_value_mask(masks: LayerMasks) -> torch.Tensor | None:
    """(H, d_vo) multiplier of the values: a removed head zeroes all its value dims."""
    if masks.head is None:
        return masks.vo
    if masks.vo is None:
        return masks.head[:, None]
    return masks.head[:, None] * masks.vo


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
        masks = masks or LayerMasks()
        if self.pre_norm:
            if self.attention is not None:
                x = x + _gate(self.attention(self.layer_norm(x), key_mask, position_bias, masks), masks.mha)
            if self.feed_forward is not None:
                x = x + _gate(self.feed_forward(self.final_layer_norm(x), masks.units), masks.ffn)
            return x
        if self.attention is not None:
            x = x + _gate(self.attention(x, key_mask, position_bias, masks), masks.mha)
        x = self.layer_norm(x)
        if self.feed_forward is not None:
            x = x + _gate(self.feed_forward(x, masks.units), masks.ffn)
        return self.final_layer_norm(x)


def _gate(x: torch.Tensor, gate: torch.Tensor | None) -> torch.Tensor:
    return x if gate is None else x * gate.to(x.dtype)


class RelativePositionBias(nn.Module):
    """WavLM's bucketed relative position bias, one column per kept original head."""

    def __init__(self, spec: EncoderSpec):
        super().__init__()
        self.num_buckets = spec.num_buckets
        self.max_distance = spec.max_distance
        self.rel_attn_embed = nn.Embedding(spec.num_buckets, len(spec.rel_heads))

    def forward(self, t: int) -> torch.Tensor:
        device = self.rel_attn_embed.weight.device
        positions = torch.arange(t, device=device)
        relative = positions[None, :] - positions[:, None]  # (T, T): key - query
        return self.rel_attn_embed(self._bucket(relative)).permute(2, 0, 1)  # (H_rel, T, T)

    def _bucket(self, relative: torch.Tensor) -> torch.Tensor:
        half = self.num_buckets // 2
        buckets = (relative > 0).long() * half
        distance = relative.abs()
        max_exact = half // 2
        far = max_exact + (
            torch.log(distance.float() / max_exact) / math.log(self.max_distance / max_exact) * (half - max_exact)
        ).long()
        far = far.clamp(max=half - 1)
        return buckets + torch.where(distance < max_exact, distance, far)


class TransformerEncoder(nn.Module):
    def __init__(self, spec: EncoderSpec):
        super().__init__()
        self.pos_conv_embed = PositionalConv(spec)
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
        for i, layer in enumerate(self.layers):
            x = layer(x, key_mask, position_bias, masks.layers[i] if masks is not None else None)
            hidden_states.append(x)
        last = self.layer_norm(x) if self.pre_norm else x
        return last, tuple(hidden_states)


class FeatureExtractor(nn.Module):
    def __init__(self, spec: EncoderSpec):
        super().__init__()
        self.conv_layers = nn.ModuleList(ConvLayer(spec, i) for i in range(len(spec.conv_channels)))

    def forward(self, waveforms: torch.Tensor, masks: EncoderMasks | None) -> torch.Tensor:
        x = waveforms[:, None]  # (B, 1, T_samples)
        previous = None
        for i, conv in enumerate(self.conv_layers):
            mask = masks.conv[i] if masks is not None else None
            x = conv(x, mask, previous)
            previous = mask
        return x  # (B, C, T')


class EncoderModules:
    """The encoder's modules and forward pass, shared by ``Encoder`` (a plain nn.Module) and
    the transformers wrapper of shrunk models (a PreTrainedModel)."""

    def build_encoder(self, spec: EncoderSpec) -> None:
        self.spec = spec
        with warnings.catch_warnings():  # pruned models have zero-sized layers; torch warns on their init
            warnings.filterwarnings("ignore", message="Initializing zero-element tensors is a no-op")
            self.feature_extractor = FeatureExtractor(spec)
            self.feature_projection = FeatureProjection(spec)
            if spec.masked_spec_embed:  # unused at inference; kept so checkpoints round-trip
                self.masked_spec_embed = nn.Parameter(torch.zeros(spec.hidden_size))
            self.encoder = TransformerEncoder(spec)

    def encode(
        self,
        input_values: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        masks: EncoderMasks | None = None,
    ) -> EncoderOutput:
        # input_values: (B, T_samples); attention_mask: (B, T_samples), 1 on real samples
        features = self.feature_extractor(input_values, masks).transpose(1, 2)  # (B, T', C)
        frame_mask = None
        if attention_mask is not None:
            frame_mask = self.frame_mask(attention_mask, features.shape[1])
        last_conv_mask = masks.conv[-1] if masks is not None else None
        x = self.feature_projection(features, last_conv_mask)  # (B, T', D)
        last, hidden_states = self.encoder(x, frame_mask, masks)
        return EncoderOutput(last, hidden_states, frame_mask)

    def frame_mask(self, attention_mask: torch.Tensor, frames: int) -> torch.Tensor:
        """(B, T') bool: True on frames computed from real samples."""
        lengths = self.spec.output_lengths(attention_mask.sum(-1))
        return torch.arange(frames, device=attention_mask.device)[None, :] < lengths[:, None]


class Encoder(EncoderModules, nn.Module):
    """A speech SSL encoder (the ``...Model`` part of wav2vec2 / HuBERT / WavLM)."""

    def __init__(self, spec: EncoderSpec):
        nn.Module.__init__(self)
        self.build_encoder(spec)

    def forward(self, input_values, attention_mask=None, masks: EncoderMasks | None = None) -> EncoderOutput:
        return self.encode(input_values, attention_mask, masks)
