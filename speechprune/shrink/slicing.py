"""Slice a gated encoder into the physically smaller one it stands for.

``shrink_encoder`` takes the dense ``EncoderSpec``, the student's weights and the final gate
values, and returns the spec and weights of the shrunk encoder. Its output equals the
masked model's output (``tests/test_shrink.py``), and its parameter count is exactly the one
``accounting`` computes for the same gates.

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
from ..model.encoder import Encoder
from ..model.spec import EncoderSpec, LayerSpec


def _values(layout: GateLayout, flat: torch.Tensor, kind: str, index: int, shape: tuple) -> torch.Tensor:
    v = layout.values(flat).get(kind, index)
    return torch.ones(shape, dtype=flat.dtype) if v is None else v.detach().cpu()


def shrink_encoder(
    spec: EncoderSpec, state: dict[str, torch.Tensor], layout: GateLayout, values: torch.Tensor
) -> tuple[EncoderSpec, dict[str, torch.Tensor]]:
    """(shrunk spec, shrunk weights) for the dense ``spec``/``state`` under gate ``values`` (N,)."""
    values = values.detach().cpu().double()
    out = {k: v.detach().cpu() for k, v in state.items()}

    def scaled(tensor: torch.Tensor, scale: torch.Tensor, dim: int) -> torch.Tensor:
        shape = [1] * tensor.dim()
        shape[dim] = -1
        return (tensor.double() * scale.view(shape)).to(tensor.dtype)

    # --- CNN: channels of layer c are rows of conv c and input columns of conv c+1 / projection
    channels = []
    previous = None  # (kept indices, soft values) of the previous conv layer
    for c, count in enumerate(spec.conv_channels):
        gate = _values(layout, values, "conv", c, (count,))
        kept = torch.nonzero(gate > 0).flatten()
        prefix = f"feature_extractor.conv_layers.{c}."
        weight = out[prefix + "conv.weight"][kept]  # (C_kept, C_in, k)
        if previous is not None:
            weight = scaled(weight[:, previous[0]], previous[1], 1)
        out[prefix + "conv.weight"] = weight
        for name in ("conv.bias", "layer_norm.weight", "layer_norm.bias"):
            if prefix + name in out:
                out[prefix + name] = out[prefix + name][kept]
        previous = (kept, gate[kept])
        channels.append(len(kept))
    last_kept, last_scale = previous
    for name in ("feature_projection.layer_norm.weight", "feature_projection.layer_norm.bias"):
        if name in out:
            out[name] = out[name][last_kept]
    name = "feature_projection.projection.weight"
    out[name] = scaled(out[name][:, last_kept], last_scale, 1)

    # --- transformer layers
    layers = []
    present_anywhere: set[int] = set()
    for l, dense in enumerate(spec.layers):
        prefix = f"encoder.layers.{l}."
        layer, present = _shrink_attention(spec, dense, layout, values, l, prefix, out, scaled)
        present_anywhere.update(present)
        _shrink_ffn(spec, dense, layout, values, l, prefix, out, scaled, layer)
        if spec.stable_layer_norm:  # pre-LN norms belong to their block
            for norm, kept in (("layer_norm", layer.attention), ("final_layer_norm", layer.ffn)):
                if not kept:
                    out.pop(prefix + norm + ".weight")
                    out.pop(prefix + norm + ".bias")
        layers.append(layer)

    rel_heads = []
    if spec.num_buckets:
        rel_heads = sorted(present_anywhere)
        name = "encoder.rel_pos.rel_attn_embed.weight"
        out[name] = out[name][:, [spec.rel_heads.index(h) for h in rel_heads]]

    shrunk = EncoderSpec.from_dict(
        {
            **spec.to_dict(),
            "conv_channels": channels,
            "conv_norm_channels": list(spec.conv_norm_channels),
            "layers": [vars(layer) for layer in layers],
            "rel_heads": rel_heads,
        }
    )
    return shrunk, out


def _shrink_attention(spec, dense: LayerSpec, layout, values, l, prefix, out, scaled):
    """Slice one attention block in ``out``; returns (LayerSpec with attention fields, present head ids)."""
    h, dq, dv = len(dense.heads), dense.qk_dim, dense.vo_dim
    mha = _values(layout, values, "mha", l, ())
    head = _values(layout, values, "head", l, (h,))
    qk = _values(layout, values, "qk", l, (h, dq))
    vo = _values(layout, values, "vo", l, (h, dv))
    a = prefix + "attention."
    layer = LayerSpec(heads=[], qk_dim=0, vo_dim=0, ffn_dim=dense.ffn_dim, attention=bool(mha > 0))
    if not layer.attention:
        for key in [k for k in out if k.startswith(a)]:
            del out[key]
        return layer, []

    present = [i for i in range(h) if head[i] > 0 and (vo[i] > 0).any()]
    qk_rows, vo_rows, qk_scale, vo_scale, qk_dims, vo_dims = [], [], [], [], [], []
    for i in present:
        kept_qk = torch.nonzero(qk[i] > 0).flatten()
        kept_vo = torch.nonzero(vo[i] > 0).flatten()
        qk_rows += (i * dq + kept_qk).tolist()
        vo_rows += (i * dv + kept_vo).tolist()
        qk_scale.append(qk[i][kept_qk])
        vo_scale.append(head[i] * vo[i][kept_vo])
        qk_dims.append(len(kept_qk))
        vo_dims.append(len(kept_vo))
    qk_scale = torch.cat(qk_scale) if qk_scale else torch.zeros(0, dtype=values.dtype)
    vo_scale = torch.cat(vo_scale) if vo_scale else torch.zeros(0, dtype=values.dtype)

    out[a + "q_proj.weight"] = scaled(out[a + "q_proj.weight"][qk_rows], qk_scale, 0)
    out[a + "q_proj.bias"] = scaled(out[a + "q_proj.bias"][qk_rows], qk_scale, 0)
    out[a + "k_proj.weight"] = out[a + "k_proj.weight"][qk_rows]
    out[a + "k_proj.bias"] = out[a + "k_proj.bias"][qk_rows]
    out[a + "v_proj.weight"] = scaled(out[a + "v_proj.weight"][vo_rows], vo_scale, 0)
    out[a + "v_proj.bias"] = scaled(out[a + "v_proj.bias"][vo_rows], vo_scale, 0)
    out[a + "out_proj.weight"] = scaled(out[a + "out_proj.weight"][:, vo_rows], mha.expand(len(vo_rows)), 1)
    out[a + "out_proj.bias"] = scaled(out[a + "out_proj.bias"], mha.expand(spec.hidden_size), 0)
    if a + "gru_rel_pos_const" in out:
        out[a + "gru_rel_pos_const"] = out[a + "gru_rel_pos_const"][:, present]

    layer.heads = [dense.heads[i] for i in present]
    layer.qk_dim = max(qk_dims, default=0)
    layer.vo_dim = max(vo_dims, default=0)
    if any(w != layer.qk_dim for w in qk_dims):
        layer.qk_dims = qk_dims
    if any(w != layer.vo_dim for w in vo_dims):
        layer.vo_dims = vo_dims
    return layer, layer.heads


def _shrink_ffn(spec, dense: LayerSpec, layout, values, l, prefix, out, scaled, layer: LayerSpec) -> None:
    ffn = _values(layout, values, "ffn", l, ())
    units = _values(layout, values, "int", l, (dense.ffn_dim,))
    f = prefix + "feed_forward."
    layer.ffn = bool(ffn > 0)
    if not layer.ffn:
        for key in [k for k in out if k.startswith(f)]:
            del out[key]
        layer.ffn_dim = 0
        return
    kept = torch.nonzero(units > 0).flatten()
    out[f + "intermediate_dense.weight"] = out[f + "intermediate_dense.weight"][kept]
    out[f + "intermediate_dense.bias"] = out[f + "intermediate_dense.bias"][kept]
    out[f + "output_dense.weight"] = scaled(out[f + "output_dense.weight"][:, kept], ffn * units[kept], 1)
    out[f + "output_dense.bias"] = scaled(out[f + "output_dense.bias"], ffn.expand(spec.hidden_size), 0)
    layer.ffn_dim = len(kept)


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
