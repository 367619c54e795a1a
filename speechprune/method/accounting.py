"""Exact, analytic parameter accounting.

``parameter_breakdown`` is a closed-form function of gate values. Evaluated on 0/1
decisions it is the exact parameter count of the shrunk encoder; evaluated on keep
probabilities it is the expected count (every term is a product of independent gates, so
the expectation of the product is the product of the probabilities), which is what the
Lagrangian drives to the target. One function serves both, so they cannot drift apart.

What the shrunk model keeps (and so what is counted):

* conv channel c of layer i: its kernel row over the kept input channels, its bias and norm
  entries; the next layer (or the feature projection) keeps only kept input channels;
* a head is present when its layer's attention block, the head itself and at least one of
  its value/output dims are kept; a present head keeps 2 (D+1) per kept query/key dim (rows of
  q_proj, k_proj with biases); a kept head keeps (2 D + 1) per kept value/output dim (row of
  v_proj with bias, column of out_proj);
* an attention block keeps out_proj's bias (a constant add even without heads), and in pre-LN
  (Large) layers its LayerNorm; WavLM adds the position-bias gate (Linear(head_dim, 8)) and one
  constant per present head, and the bias table keeps one column per head present in any layer;
* an FFN block keeps (2 D + 1) per unit and output_dense's bias, plus its LayerNorm in pre-LN layers;
* never pruned: the hidden size D, the positional convolution, post-LN layer norms,
  the encoder LayerNorm, the feature projection's bias, ``masked_spec_embed``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..model.spec import EncoderSpec, LayerSpec
from .gates import GateValues


@dataclass
class AttentionGates:
    """Gate values of one attention block and the rule of which heads are present, shared by
    every cost (parameters, MACs, latency): a head is present when its block, the head itself
    and at least one of its value/output dims are kept. Products of independent gates only,
    so expectations on keep probabilities stay exact."""

    mha: torch.Tensor  # ()
    head: torch.Tensor  # (H,)
    qk: torch.Tensor  # (H, d_qk)
    vo: torch.Tensor  # (H, d_vo)

    @classmethod
    def of(cls, spec: EncoderSpec, keep: GateValues, l: int) -> "AttentionGates":
        layer, h = spec.layers[l], len(spec.layers[l].heads)
        return cls(keep.value("mha", l), keep.value("head", l, h), keep.value("qk", l, h, layer.qk_dim),
                   keep.value("vo", l, h, layer.vo_dim))

    @property
    def alive(self) -> torch.Tensor:
        """(H,) head kept with at least one v/o dim (whatever its block)."""
        return self.head * (1 - torch.prod(1 - self.vo, dim=-1))

    @property
    def present(self) -> torch.Tensor:
        """(H,) head that computes something."""
        return self.mha * self.alive

    @property
    def qk_dims(self) -> torch.Tensor:
        """Kept q/k dims of present heads (a head without v/o dims loses its q/k rows too)."""
        return (self.present * self.qk.sum(-1)).sum()

    @property
    def vo_dims(self) -> torch.Tensor:
        """Kept v/o dims of kept heads."""
        return self.mha * (self.head * self.vo.sum(-1)).sum()


def parameter_breakdown(spec: EncoderSpec, keep: GateValues) -> dict[str, torch.Tensor]:
    """Parameters per component: "cnn", "projection", "fixed", "attention.L", "ffn.L"."""
    ref = keep.flat
    d = spec.hidden_size

    parts: dict[str, torch.Tensor] = {}

    # CNN: products of kept counts of neighbouring layers
    cnn = torch.zeros((), dtype=ref.dtype, device=ref.device)
    previous = torch.ones((), dtype=ref.dtype, device=ref.device)  # the waveform: one input channel
    for c, channels in enumerate(spec.conv_channels):
        kept = keep.value("conv", c, channels).sum()
        cnn = cnn + kept * previous * spec.conv_kernels[c]
        if spec.conv_bias:
            cnn = cnn + kept
        if spec.conv_norm == "layer" or c == 0:
            cnn = cnn + 2 * kept
        previous = kept
    parts["cnn"] = cnn
    parts["projection"] = previous * d + (2 * previous if spec.feat_proj_layer_norm else 0)

    # never pruned
    pos_weight = d * (d // spec.pos_conv_groups) * spec.pos_conv_kernel
    pos = pos_weight + d + (2 * d if spec.pos_conv_batch_norm else spec.pos_conv_kernel)
    fixed = pos + 2 * d + d  # positional conv, encoder LayerNorm, projection bias
    if spec.masked_spec_embed:
        fixed += d
    if not spec.stable_layer_norm:
        fixed += 4 * d * len(spec.layers)  # post-LN layers keep both norms
    parts["fixed"] = torch.tensor(float(fixed), dtype=ref.dtype, device=ref.device)

    wavlm = spec.num_buckets > 0
    block_norm = 2 * d if spec.stable_layer_norm else 0
    absent = None  # (H,): probability that each original head is present in no layer
    for l, layer in enumerate(spec.layers):
        gates = AttentionGates.of(spec, keep, l)
        mha, present = gates.mha, gates.present
        attention = 2 * (d + 1) * gates.qk_dims + (2 * d + 1) * gates.vo_dims + mha * (d + block_norm)
        if wavlm:
            attention = attention + mha * (8 * spec.head_dim + 8) + present.sum()
            absent = (1 - present) if absent is None else absent * (1 - present)
        parts[f"attention.{l}"] = attention

        ffn = keep.value("ffn", l)
        units = keep.value("int", l, layer.ffn_dim)
        parts[f"ffn.{l}"] = ffn * ((2 * d + 1) * units.sum() + d + block_norm)

    if wavlm:
        parts["fixed"] = parts["fixed"] + spec.num_buckets * (1 - absent).sum()
    return parts


def parameter_count(spec: EncoderSpec, keep: GateValues) -> torch.Tensor:
    """Scalar: exact count for 0/1 decisions, expected count for keep probabilities."""
    return torch.stack(list(parameter_breakdown(spec, keep).values())).sum()


def dense_count(spec: EncoderSpec, layout) -> int:
    ones = torch.ones(layout.size, dtype=torch.float64)
    return int(round(parameter_count(spec, GateValues(layout, ones)).item()))


def component_totals(parts: dict[str, torch.Tensor]) -> dict[str, int]:
    """Breakdown summed into cnn / projection / attention / ffn / fixed, as integers."""
    totals = {"cnn": 0.0, "projection": 0.0, "attention": 0.0, "ffn": 0.0, "fixed": 0.0}
    for name, value in parts.items():
        totals[name.split(".")[0]] += float(value)
    return {k: int(round(v)) for k, v in totals.items()}


def pruned_spec(spec: EncoderSpec, keep: GateValues) -> EncoderSpec:
    """The architecture of the shrunk encoder that gate values > 0 keep (the rule ``shrink``
    slices by): present heads with their kept widths, kept FFN units, kept conv channels."""
    binary = GateValues(keep.layout, (keep.flat.detach().cpu() > 0).double())
    conv = [int(binary.value("conv", c, n).sum()) for c, n in enumerate(spec.conv_channels)]
    layers, present_anywhere = [], set()
    for l, layer in enumerate(spec.layers):
        gates = AttentionGates.of(spec, binary, l)
        mha = bool(gates.mha > 0)
        present = torch.nonzero(gates.present > 0).flatten().tolist()
        qk, vo = gates.qk.sum(-1), gates.vo.sum(-1)  # (H,) kept dims
        qk_dims, vo_dims = [int(qk[i]) for i in present], [int(vo[i]) for i in present]
        ffn = bool(binary.value("ffn", l) > 0)
        units = int(binary.value("int", l, layer.ffn_dim).sum()) if ffn else 0
        qk_dim, vo_dim = max(qk_dims, default=0), max(vo_dims, default=0)
        layers.append(
            LayerSpec(
                heads=[layer.heads[i] for i in present],
                qk_dim=qk_dim,
                vo_dim=vo_dim,
                ffn_dim=units,
                attention=mha,
                ffn=ffn,
                qk_dims=qk_dims if any(w != qk_dim for w in qk_dims) else None,
                vo_dims=vo_dims if any(w != vo_dim for w in vo_dims) else None,
            )
        )
        present_anywhere.update(layer.heads[i] for i in present)
    return EncoderSpec.from_dict(
        {
            **spec.to_dict(),
            "conv_channels": conv,
            "conv_norm_channels": list(spec.conv_norm_channels),
            "layers": [vars(layer) for layer in layers],
            "rel_heads": sorted(present_anywhere) if spec.num_buckets else [],
        }
    )


def kept_structure(spec: EncoderSpec, keep: GateValues) -> dict:
    """What gate values > 0 keep, per layer, in the terms a user reads (JSON-ready)."""
    pruned = pruned_spec(spec, keep)
    layers = []
    for layer in pruned.layers:
        qk_dims, vo_dims = layer.head_widths()
        layers.append(
            {
                "attention": layer.attention,
                "heads": list(layer.heads),
                "qk_dims": list(qk_dims),
                "vo_dims": list(vo_dims),
                "ffn": layer.ffn,
                "ffn_units": layer.ffn_dim,
            }
        )
    return {"conv_channels": pruned.conv_channels, "layers": layers}
