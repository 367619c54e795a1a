"""Self-attention of a transformer layer (its block, heads and per-head q/k and v/o dims), and
WavLM's relative position bias table, which keeps a column per head present in any layer."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from ...model.spec import EncoderSpec
from ..latency_steps import ATTENTION
from .base import BlockPart, Number, Part, Width, group_gates, kept_indices, scaled

if TYPE_CHECKING:
    from ..gates import GateValues


@dataclass
class AttentionSizes:
    block: Number  # the block is kept: its output bias, pre-LN norm, WavLM's bias gate
    runs: Number  # the block computes: kept, with a present head
    heads: Number  # present heads
    qk_dims: Number  # stored q/k dims of present heads (a head without v/o dims loses them too)
    vo_dims: Number  # stored v/o dims of kept heads
    score_dims: Number  # sum over heads of the q.k^T and weights.v widths the T'^2 products run at


@dataclass
class AttentionGates:
    """Gate values of one attention block and the rule of which heads are present: a head is
    present when its block, the head itself and at least one of its value/output dims are kept.
    Products of independent gates only, so expectations on keep probabilities stay exact."""

    mha: torch.Tensor  # ()
    head: torch.Tensor  # (H,)
    qk: torch.Tensor  # (H, d_qk)
    vo: torch.Tensor  # (H, d_vo)

    @property
    def alive(self) -> torch.Tensor:
        """(H,) head kept with at least one v/o dim (whatever its block)."""
        return self.head * (1 - torch.prod(1 - self.vo, dim=-1))

    @property
    def present(self) -> torch.Tensor:
        """(H,) head that computes something."""
        return self.mha * self.alive


@dataclass
class AttentionKept:
    block: bool
    present: list[int]  # positions of the present heads in the layer
    qk: torch.Tensor  # (H, d_qk) bool
    vo: torch.Tensor  # (H, d_vo) bool


class AttentionPart(BlockPart):
    """Self-attention of layer l: the block ("mha"), its heads ("head"), each head's query/key
    dims ("qk") and value/output dims ("vo"). A present head keeps 2 (D + 1) per q/k dim (rows
    of q_proj and k_proj with biases) and a kept head (2 D + 1) per v/o dim (row of v_proj with
    bias, column of out_proj); the block keeps out_proj's bias, its LayerNorm in pre-LN layers,
    and for WavLM the position-bias gate (Linear(head_dim, 8)) and one constant per present head.
    The T'^2 products run every head at the layer's run-time width w (``LayerSpec.runtime_width``);
    a maximum is not multilinear, so in the gates each head counts at its own widths there (an
    expectation that may underestimate where heads of a layer differ in width, never over)."""

    gate_kinds = ("mha", "head", "qk", "vo")
    coarse_kinds = ("mha", "head")
    module, norm = "attention", "layer_norm"

    def __init__(self, spec: EncoderSpec, l: int):
        self.name, self.l = f"attention.{l}", l
        layer = spec.layers[l]
        self.head_ids = list(layer.heads)  # original ids (WavLM's position bias is keyed by them)
        self.heads, self.qk_dim, self.vo_dim = len(layer.heads), layer.qk_dim, layer.vo_dim
        self.d, self.head_dim = spec.hidden_size, spec.head_dim
        self.pre_norm = spec.stable_layer_norm
        self.block_norm = 2 * self.d if self.pre_norm else 0
        self.wavlm = spec.num_buckets > 0

    def gates(self):
        h = self.heads
        shapes = {"mha": (), "head": (h,), "qk": (h, self.qk_dim), "vo": (h, self.vo_dim)}
        return [(kind, self.l, shape) for kind, shape in shapes.items()]

    def gate_values(self, keep: GateValues) -> AttentionGates:
        l, h = self.l, self.heads
        return AttentionGates(keep.value("mha", l), keep.value("head", l, h), keep.value("qk", l, h, self.qk_dim),
                              keep.value("vo", l, h, self.vo_dim))

    def expected_sizes(self, keep):
        gates = self.gate_values(keep)
        present = gates.present
        qk_dims = (present * gates.qk.sum(-1)).sum()
        vo_dims = gates.mha * (gates.head * gates.vo.sum(-1)).sum()
        runs = gates.mha * (1 - torch.prod(1 - gates.alive))
        return AttentionSizes(gates.mha, runs, present.sum(), qk_dims, vo_dims, qk_dims + vo_dims)

    def sizes(self, spec):
        layer = spec.layers[self.l]
        heads = len(layer.heads) if layer.attention else 0
        qk, vo = layer.head_widths()
        dims = (sum(qk), sum(vo)) if heads else (0, 0)
        return AttentionSizes(float(layer.attention), float(heads > 0), heads, *dims, 2 * heads * layer.runtime_width)

    def params(self, s):
        count = 2 * (self.d + 1) * s.qk_dims + (2 * self.d + 1) * s.vo_dims + s.block * (self.d + self.block_norm)
        if self.wavlm:
            count = count + s.block * (8 * self.head_dim + 8) + s.heads
        return {self.name: count}

    def macs(self, s, frames):
        t = frames.t
        projections = 2 * t * self.d * (s.qk_dims + s.vo_dims)
        if self.wavlm:  # the position bias gate: Linear(head_dim, 8) per present head
            projections = projections + t * self.head_dim * 8 * s.heads
        return {f"{self.name}.projections": projections, f"{self.name}.scores": t * t * s.score_dims}

    def latency(self, s, frames):
        t = frames.t
        features = {"attention": s.runs, "heads": s.heads, "projection_macs": 2 * t * self.d * (s.qk_dims + s.vo_dims) / 1e6,
                    "score_macs": t * t * s.score_dims / 1e6}
        return ("layer", self.l), features

    def step_factor(self, steps, s):
        if not s.heads:
            return 1.0
        return steps.factor(ATTENTION.format(int(s.heads)), s.score_dims / (2 * s.heads))  # at the run-time width

    def decide(self, binary, decided):
        gates = self.gate_values(binary)
        present = torch.nonzero(gates.present > 0).flatten().tolist()
        return AttentionKept(bool(gates.mha > 0), present, gates.qk > 0, gates.vo > 0)

    def widths(self, kept, layout):
        """Each present head's q/k and v/o widths (its head count stays: heads are kept whole);
        a head without q/k dims attends uniformly and keeps none."""
        widths = []
        for position, i in enumerate(kept.present):
            for kind, dims, mask in (("qk", self.qk_dim, kept.qk), ("vo", self.vo_dim, kept.vo)):
                group, count = group_gates(layout, kind, self.l), int(mask[i].sum())
                if group is not None and count:
                    widths.append(Width(f"{self.name}.head{self.head_ids[i]}.{kind}", group[i * dims:(i + 1) * dims],
                                        count, self, (position, kind)))
        return widths

    def resize(self, fields, where, width):
        position, kind = where
        layer = fields["layers"][self.l]
        dims = list(layer[f"{kind}_dims"] or [layer[f"{kind}_dim"]] * len(layer["heads"]))
        dims[position] = width
        layer.update(_head_widths(kind, dims))

    def shape(self, kept, fields):
        layer = fields["layers"][self.l]
        layer.update(heads=[self.head_ids[i] for i in kept.present], attention=kept.block)
        layer.update(_head_widths("qk", [int(kept.qk[i].sum()) for i in kept.present]))
        layer.update(_head_widths("vo", [int(kept.vo[i].sum()) for i in kept.present]))

    def slice_kept(self, state, kept: AttentionKept, soft, a):
        gates = self.gate_values(soft)
        gates = AttentionGates(*(v.detach().cpu().double() for v in (gates.mha, gates.head, gates.qk, gates.vo)))
        qk_rows, vo_rows, qk_scale, vo_scale = [], [], [], []
        for i in kept.present:
            kept_qk, kept_vo = kept_indices(kept.qk[i]), kept_indices(kept.vo[i])
            qk_rows += (i * self.qk_dim + kept_qk).tolist()
            vo_rows += (i * self.vo_dim + kept_vo).tolist()
            qk_scale.append(gates.qk[i][kept_qk])
            vo_scale.append(gates.head[i] * gates.vo[i][kept_vo])
        qk_scale = torch.cat(qk_scale) if qk_scale else torch.zeros(0, dtype=torch.float64)
        vo_scale = torch.cat(vo_scale) if vo_scale else torch.zeros(0, dtype=torch.float64)
        for name, rows, scale in (("q_proj", qk_rows, qk_scale), ("k_proj", qk_rows, None), ("v_proj", vo_rows, vo_scale)):
            for kind in ("weight", "bias"):
                sliced = state[f"{a}{name}.{kind}"][rows]
                state[f"{a}{name}.{kind}"] = sliced if scale is None else scaled(sliced, scale, 0)
        mha = gates.mha
        state[a + "out_proj.weight"] = scaled(state[a + "out_proj.weight"][:, vo_rows], mha.expand(len(vo_rows)), 1)
        state[a + "out_proj.bias"] = scaled(state[a + "out_proj.bias"], mha.expand(self.d), 0)
        if a + "gru_rel_pos_const" in state:
            state[a + "gru_rel_pos_const"] = state[a + "gru_rel_pos_const"][:, kept.present]


def _head_widths(kind: str, dims: list[int]) -> dict:
    """A layer's spec fields for the widths ``dims`` of its heads ("qk" or "vo"): the widest as
    ``{kind}_dim``, the list only when the heads differ."""
    widest = max(dims, default=0)
    return {f"{kind}_dim": widest, f"{kind}_dims": dims if any(w != widest for w in dims) else None}


class RelativePositionPart(Part):
    """WavLM's relative position bias table: one column of ``num_buckets`` per original head
    present in any layer (expected: 1 - the product over layers of 1 - present)."""

    name = "fixed.rel_pos"

    def __init__(self, spec: EncoderSpec, attention: list[AttentionPart]):
        self.buckets, self.rel_heads, self.attention = spec.num_buckets, list(spec.rel_heads), attention

    def expected_sizes(self, keep):
        absent = 1
        for part in self.attention:
            absent = absent * (1 - part.gate_values(keep).present)  # (H,): present in no layer so far
        return (1 - absent).sum()

    def sizes(self, spec):
        return len(spec.rel_heads)

    def params(self, heads):
        return {self.name: self.buckets * heads}

    def decide(self, binary, decided):
        return sorted({part.head_ids[i] for part in self.attention for i in decided[part.name].present})

    def shape(self, kept, fields):
        fields["rel_heads"] = kept

    def slice(self, state, decided, soft):
        name = "encoder.rel_pos.rel_attn_embed.weight"
        state[name] = state[name][:, [self.rel_heads.index(h) for h in decided[self.name]]]
