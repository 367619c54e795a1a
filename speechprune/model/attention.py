"""Multi-head self-attention at per-layer head counts and per-head widths, and WavLM's
relative position bias. Part of the self-contained model code (see ``encoder``).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .masks import LayerMasks
from .spec import EncoderSpec, LayerSpec

# True while torch.export traces the model (ONNX export); older torch releases without the query: False
_is_exporting = getattr(torch.compiler, "is_exporting", lambda: False)


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
        self.width = layer.runtime_width  # w: every head runs this wide (stored widths: layer.head_widths())
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
            "qk": _padding_slots(qk_widths, self.width),
            "vo": _padding_slots(vo_widths, self.width),
            "out": _stored_slots(vo_widths, self.width),
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
        o = o.reshape(b, t, self.num_heads * self.width)  # (B, T, H * w)
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
            qk = masks.get("qk")
            if qk is not None:  # masking q alone is enough: q.k sums over kept dims only
                q = q * _to_width(qk, q.shape[-1])[:, None, :].to(q.dtype)
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
        return y.view(b, t, self.num_heads, self.width).transpose(1, 2)

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
    head, vo = masks.get("head"), masks.get("vo")
    if head is None:
        return vo
    if vo is None:
        return head[:, None]
    return head[:, None] * vo


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
