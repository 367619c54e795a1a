"""The parts of an encoder, each the one owner of its structure's rules.

A part (a conv layer, the feature projection, the positional convolution, the attention and
the FFN of each layer, and the never-pruned rest) declares in one place:

* ``gates``: its gate groups (kind, shape), and ``fill_masks``: where the forward pass reads
  their values (``model.masks``);
* its sizes, two ways: ``expected_sizes(keep)`` in closed form in gate values, multilinear
  (every term a product of independent gates), so that on keep probabilities it is the
  expectation and on 0/1 decisions the exact value; and ``sizes(spec)`` of a dense or shrunk
  spec as it runs, heads at their run-time width (``LayerSpec.head_width``, the one owner of
  padding and rounding);
* its costs, each one formula on those sizes, serving both: ``params``, ``macs`` and ``latency``
  (the features of the cost table, ``method.latency``). A cost is a dict whose keys' first word
  is the component it is reported under ("cnn", "projection", "attention", "ffn", "fixed";
  for MACs "pos_conv" too);
* ``decide``: what 0/1 decisions keep (indices), ``shape``: the fields of the shrunk spec that
  makes, and ``slice``: its weights cut to exactly that, soft gate values folded into the
  weights that consume them.

Everything that walks the encoder is a loop over ``encoder_parts(spec)``: the gate layout, the
parameter count (``accounting``), MACs (``macs``), latency (``latency``), ``pruned_spec`` and
``shrink``. Adding a structure is adding a part (docs/architecture.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Union

import torch

from ..model.masks import EncoderMasks, LayerMasks
from ..model.spec import EncoderSpec, conv_lengths

if TYPE_CHECKING:  # gates.py builds its layout from the parts
    from .gates import GateValues

Number = Union[torch.Tensor, float, int]  # a tensor of gate values' sizes, a number of a spec's
State = dict  # name -> tensor: an encoder's state dict, sliced in place


@dataclass(frozen=True)
class Frames:
    """Lengths of one input of ``samples`` through the CNN: per conv layer, and T' at the end."""

    lengths: list[int]

    @classmethod
    def of(cls, spec: EncoderSpec, samples: int) -> "Frames":
        return cls(conv_lengths(spec, samples))

    @property
    def t(self) -> int:
        return self.lengths[-1]


class Part:
    """One structure of the encoder; the defaults are those of a part without gates or costs."""

    name: str  # unique within an encoder
    gate_kinds: tuple[str, ...] = ()  # the kinds of its gates, in layout order

    def gates(self) -> list[tuple[str, int, tuple[int, ...]]]:
        """(kind, index, shape) of each gate group, in layout order."""
        return []

    def fill_masks(self, values: GateValues, masks: EncoderMasks) -> None:
        """Put the values of its gates where the forward pass reads them."""

    def expected_sizes(self, keep: GateValues):
        return None

    def sizes(self, spec: EncoderSpec):
        return None

    def params(self, sizes) -> dict[str, Number]:
        return {}

    def macs(self, sizes, frames: Frames) -> dict[str, Number]:
        return {}

    def latency(self, sizes, frames: Frames) -> tuple[tuple, dict] | None:
        """(the unit of the cost table it is timed in, its features: ``method.latency``), or None
        when it takes no time of its own. Units: ("conv", c), ("projection",), ("pos_conv",),
        ("layer", l); the features of a unit's parts add up to its row."""
        return None

    def decide(self, binary: GateValues, decided: dict):
        """What 0/1 decisions keep; ``decided`` holds the parts before it, by name."""
        return None

    def shape(self, kept, fields: dict) -> None:
        """Write what it keeps into ``fields`` (``EncoderSpec.to_dict()`` of the dense spec)."""

    def slice(self, state: State, decided: dict, soft: GateValues) -> None:
        """Cut its weights in ``state`` to what ``decided[self.name]`` keeps, soft values folded in."""


# --- the CNN and the feature projection ----------------------------------------------------------


@dataclass
class ConvSizes:
    inputs: Number  # input channels (1: the waveform)
    channels: Number  # output channels
    channels_squared: Number  # C_out^2; E[C_out^2] = (sum p)^2 + sum p (1 - p) of keep probabilities


def _scaled(tensor: torch.Tensor, scale: torch.Tensor, dim: int) -> torch.Tensor:
    """``tensor`` times ``scale`` along ``dim`` (soft gate values folded in), in float64."""
    shape = [1] * tensor.dim()
    shape[dim] = -1
    return (tensor.double() * scale.view(shape)).to(tensor.dtype)


def _kept(values: torch.Tensor) -> torch.Tensor:
    return torch.nonzero(values > 0).flatten()


class ConvPart(Part):
    """Conv layer c: its output channels are gated ("conv"); a removed channel takes its kernel
    row, bias and norm entries, and the next layer's (or the projection's) input column."""

    gate_kinds = ("conv",)

    def __init__(self, spec: EncoderSpec, c: int):
        self.name, self.c = f"cnn.{c}", c
        self.channels, self.kernel = spec.conv_channels[c], spec.conv_kernels[c]
        self.inputs = spec.conv_channels[c - 1] if c else 1  # the waveform: one input channel
        self.bias = spec.conv_bias
        self.norm = spec.conv_norm == "layer" or c == 0  # GroupNorm in layer 0, LayerNorms in all with "layer"

    def gates(self):
        return [("conv", self.c, (self.channels,))]

    def fill_masks(self, values, masks):
        masks.conv[self.c] = values.get("conv", self.c)

    def kept_channels(self, keep: GateValues) -> torch.Tensor:
        return keep.value("conv", self.c, self.channels)

    def expected_sizes(self, keep):
        gates = self.kept_channels(keep)
        kept = gates.sum()
        inputs = _input_channels(keep, self.c, self.inputs)
        return ConvSizes(inputs, kept, kept**2 + (gates * (1 - gates)).sum())

    def sizes(self, spec):
        inputs = spec.conv_channels[self.c - 1] if self.c else 1
        return ConvSizes(inputs, spec.conv_channels[self.c], spec.conv_channels[self.c] ** 2)

    def params(self, s):
        per_channel = s.inputs * self.kernel + (1 if self.bias else 0) + (2 if self.norm else 0)
        return {self.name: s.channels * per_channel}

    def macs(self, s, frames):
        return {self.name: frames.lengths[self.c] * self.kernel * s.channels * s.inputs}

    def latency(self, s, frames):
        return ("conv", self.c), conv_features(frames.lengths[self.c], self.kernel, s.inputs, s.channels,
                                               s.channels_squared)

    def decide(self, binary, decided):
        return _kept(self.kept_channels(binary))

    def shape(self, kept, fields):
        fields["conv_channels"][self.c] = len(kept)

    def slice(self, state, decided, soft):
        kept = decided[self.name]
        prefix = f"feature_extractor.conv_layers.{self.c}."
        weight = state[prefix + "conv.weight"][kept]  # (C_kept, C_in, k)
        if self.c:  # the previous layer's kept channels, its soft values folded in
            previous, scale = _previous_channels(decided, soft, self.c, self.inputs)
            weight = _scaled(weight[:, previous], scale, 1)
        state[prefix + "conv.weight"] = weight
        for name in ("conv.bias", "layer_norm.weight", "layer_norm.bias"):
            if prefix + name in state:
                state[prefix + name] = state[prefix + name][kept]


def _input_channels(keep: GateValues, c: int, channels: int) -> Number:
    """Kept channels of the ``channels`` that conv layer c (or the projection, c = the number of
    conv layers) reads: those of conv layer c - 1, or the waveform's one."""
    if c == 0:
        return torch.ones((), dtype=keep.flat.dtype, device=keep.flat.device)
    return keep.value("conv", c - 1, channels).sum()


def _previous_channels(decided: dict, soft: GateValues, c: int, channels: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(kept indices, their soft values) of the ``channels`` of conv layer c - 1."""
    kept = decided[f"cnn.{c - 1}"]
    return kept, soft.value("conv", c - 1, channels).detach().cpu().double()[kept]


@dataclass
class ProjectionSizes:
    channels: Number  # channels of the last conv layer it reads


class ProjectionPart(Part):
    """The feature projection (and its LayerNorm): as wide as the last conv layer keeps. Its bias
    is counted with the never-pruned rest (``FramePart``)."""

    name = "projection"

    def __init__(self, spec: EncoderSpec):
        self.last, self.d, self.norm = len(spec.conv_channels), spec.hidden_size, spec.feat_proj_layer_norm
        self.inputs = spec.conv_channels[-1]

    def expected_sizes(self, keep):
        return ProjectionSizes(_input_channels(keep, self.last, self.inputs))

    def sizes(self, spec):
        return ProjectionSizes(spec.conv_channels[-1])

    def params(self, s):
        return {self.name: s.channels * self.d + (2 * s.channels if self.norm else 0)}

    def macs(self, s, frames):
        return {self.name: frames.t * self.d * s.channels}

    def latency(self, s, frames):
        return ("projection",), projection_features(frames.t, self.d, s.channels)

    def slice(self, state, decided, soft):
        kept, scale = _previous_channels(decided, soft, self.last, self.inputs)
        for name in ("feature_projection.layer_norm.weight", "feature_projection.layer_norm.bias"):
            if name in state:
                state[name] = state[name][kept]
        name = "feature_projection.projection.weight"
        state[name] = _scaled(state[name][:, kept], scale, 1)


# --- never pruned ---------------------------------------------------------------------------------


class PositionalConvPart(Part):
    """The positional convolution: not gated (yet), so its costs are constants."""

    name = "pos_conv"

    def __init__(self, spec: EncoderSpec):
        self.d, self.kernel, self.groups = spec.hidden_size, spec.pos_conv_kernel, spec.pos_conv_groups
        self.batch_norm = spec.pos_conv_batch_norm

    def params(self, sizes):
        weight = self.d * (self.d // self.groups) * self.kernel
        # weight norm keeps a gain per kernel position (dim=2); HuBERT's BatchNorm variant a scale and shift
        return {"fixed.pos_conv": weight + self.d + (2 * self.d if self.batch_norm else self.kernel)}

    def macs(self, sizes, frames):
        # padded by kernel // 2 on both sides: T' + 1 frames for an even kernel (the last one is
        # trimmed, but computed); each output frame reads D / groups channels x kernel
        out_frames = frames.t + 2 * (self.kernel // 2) - self.kernel + 1
        return {"pos_conv": out_frames * self.d * (self.d // self.groups) * self.kernel}

    def latency(self, sizes, frames):
        return ("pos_conv",), {"const": 1.0}


class FramePart(Part):
    """What no gate removes outside the layers: the encoder's LayerNorm, the projection's bias,
    ``masked_spec_embed``."""

    name = "frame"

    def __init__(self, spec: EncoderSpec):
        d = spec.hidden_size
        self.count = 2 * d + d + (d if spec.masked_spec_embed else 0)

    def params(self, sizes):
        return {"fixed.frame": self.count}


class LayerFramePart(Part):
    """What no gate removes in transformer layer l: post-LN layers keep both norms whatever is
    removed (pre-LN norms belong to their block); and the layer's constant time."""

    def __init__(self, spec: EncoderSpec, l: int):
        self.name, self.l = f"fixed.layer.{l}", l
        self.count = 0 if spec.stable_layer_norm else 4 * spec.hidden_size

    def params(self, sizes):
        return {self.name: self.count}

    def latency(self, sizes, frames):
        return ("layer", self.l), {"const": 1.0}


# --- transformer layers ---------------------------------------------------------------------------


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


class AttentionPart(Part):
    """Self-attention of layer l: the block ("mha"), its heads ("head"), each head's query/key
    dims ("qk") and value/output dims ("vo"). A present head keeps 2 (D + 1) per q/k dim (rows
    of q_proj and k_proj with biases) and a kept head (2 D + 1) per v/o dim (row of v_proj with
    bias, column of out_proj); the block keeps out_proj's bias, its LayerNorm in pre-LN layers,
    and for WavLM the position-bias gate (Linear(head_dim, 8)) and one constant per present head.
    The T'^2 products run every head at the layer's run-time width w (``LayerSpec.head_width``);
    a maximum is not multilinear, so in the gates each head counts at its own widths there (an
    expectation that may underestimate where heads of a layer differ in width, never over)."""

    gate_kinds = ("mha", "head", "qk", "vo")

    def __init__(self, spec: EncoderSpec, l: int):
        self.name, self.l = f"attention.{l}", l
        layer = spec.layers[l]
        self.head_ids = list(layer.heads)  # original ids (WavLM's position bias is keyed by them)
        self.heads, self.qk_dim, self.vo_dim = len(layer.heads), layer.qk_dim, layer.vo_dim
        self.d, self.head_dim = spec.hidden_size, spec.head_dim
        self.block_norm = 2 * self.d if spec.stable_layer_norm else 0
        self.wavlm = spec.num_buckets > 0

    def gates(self):
        h = self.heads
        shapes = {"mha": (), "head": (h,), "qk": (h, self.qk_dim), "vo": (h, self.vo_dim)}
        return [(kind, self.l, shape) for kind, shape in shapes.items()]

    def fill_masks(self, values, masks):
        layer = masks.layers[self.l]
        layer.mha, layer.head = values.get("mha", self.l), values.get("head", self.l)
        layer.qk, layer.vo = values.get("qk", self.l), values.get("vo", self.l)

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
        return AttentionSizes(float(layer.attention), float(heads > 0), heads, *dims, 2 * heads * layer.head_width)

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
        return ("layer", self.l), {"attention": s.runs, "heads": s.heads,
                            "projection_macs": 2 * t * self.d * (s.qk_dims + s.vo_dims) / 1e6,
                            "score_macs": t * t * s.score_dims / 1e6}

    def decide(self, binary, decided):
        gates = self.gate_values(binary)
        present = torch.nonzero(gates.present > 0).flatten().tolist()
        return AttentionKept(bool(gates.mha > 0), present, gates.qk > 0, gates.vo > 0)

    def shape(self, kept, fields):
        layer = fields["layers"][self.l]
        qk_dims = [int(kept.qk[i].sum()) for i in kept.present]
        vo_dims = [int(kept.vo[i].sum()) for i in kept.present]
        qk_dim, vo_dim = max(qk_dims, default=0), max(vo_dims, default=0)
        layer.update(heads=[self.head_ids[i] for i in kept.present], attention=kept.block, qk_dim=qk_dim,
                     vo_dim=vo_dim, qk_dims=qk_dims if any(w != qk_dim for w in qk_dims) else None,
                     vo_dims=vo_dims if any(w != vo_dim for w in vo_dims) else None)

    def slice(self, state, decided, soft):
        kept: AttentionKept = decided[self.name]
        prefix = f"encoder.layers.{self.l}."
        a = prefix + "attention."
        if not kept.block:
            for key in [k for k in state if k.startswith(a)]:
                del state[key]
            if self.block_norm:
                _drop_pre_norm(state, prefix + "layer_norm")
            return
        gates = self.gate_values(soft)
        gates = AttentionGates(*(v.detach().cpu().double() for v in (gates.mha, gates.head, gates.qk, gates.vo)))
        qk_rows, vo_rows, qk_scale, vo_scale = [], [], [], []
        for i in kept.present:
            kept_qk, kept_vo = _kept(kept.qk[i]), _kept(kept.vo[i])
            qk_rows += (i * self.qk_dim + kept_qk).tolist()
            vo_rows += (i * self.vo_dim + kept_vo).tolist()
            qk_scale.append(gates.qk[i][kept_qk])
            vo_scale.append(gates.head[i] * gates.vo[i][kept_vo])
        qk_scale = torch.cat(qk_scale) if qk_scale else torch.zeros(0, dtype=torch.float64)
        vo_scale = torch.cat(vo_scale) if vo_scale else torch.zeros(0, dtype=torch.float64)
        for name, rows, scale in (("q_proj", qk_rows, qk_scale), ("k_proj", qk_rows, None), ("v_proj", vo_rows, vo_scale)):
            for kind in ("weight", "bias"):
                sliced = state[f"{a}{name}.{kind}"][rows]
                state[f"{a}{name}.{kind}"] = sliced if scale is None else _scaled(sliced, scale, 0)
        mha = gates.mha
        state[a + "out_proj.weight"] = _scaled(state[a + "out_proj.weight"][:, vo_rows], mha.expand(len(vo_rows)), 1)
        state[a + "out_proj.bias"] = _scaled(state[a + "out_proj.bias"], mha.expand(self.d), 0)
        if a + "gru_rel_pos_const" in state:
            state[a + "gru_rel_pos_const"] = state[a + "gru_rel_pos_const"][:, kept.present]


def _drop_pre_norm(state: State, name: str) -> None:
    """A removed block's pre-LN norm goes with it (post-LN norms stay: ``LayerFramePart``)."""
    del state[name + ".weight"], state[name + ".bias"]


@dataclass
class FeedForwardSizes:
    block: Number  # the block is kept: output_dense's bias, its pre-LN norm
    runs: Number  # the block computes: kept, with a unit
    units: Number  # kept units of a kept block


@dataclass
class FeedForwardKept:
    block: bool
    units: torch.Tensor  # kept unit indices


class FeedForwardPart(Part):
    """The FFN of layer l: the block ("ffn") and its intermediate units ("int"). A unit keeps
    (2 D + 1): a row of intermediate_dense with its bias, a column of output_dense; the block
    keeps output_dense's bias, and its LayerNorm in pre-LN layers."""

    gate_kinds = ("ffn", "int")

    def __init__(self, spec: EncoderSpec, l: int):
        self.name, self.l = f"ffn.{l}", l
        self.units, self.d = spec.layers[l].ffn_dim, spec.hidden_size
        self.block_norm = 2 * self.d if spec.stable_layer_norm else 0

    def gates(self):
        return [("ffn", self.l, ()), ("int", self.l, (self.units,))]

    def fill_masks(self, values, masks):
        layer = masks.layers[self.l]
        layer.ffn, layer.units = values.get("ffn", self.l), values.get("int", self.l)

    def gate_values(self, keep: GateValues) -> tuple[torch.Tensor, torch.Tensor]:
        return keep.value("ffn", self.l), keep.value("int", self.l, self.units)

    def expected_sizes(self, keep):
        block, units = self.gate_values(keep)
        return FeedForwardSizes(block, block * (1 - torch.prod(1 - units)), block * units.sum())

    def sizes(self, spec):
        layer = spec.layers[self.l]
        units = layer.ffn_dim if layer.ffn else 0
        return FeedForwardSizes(float(layer.ffn), float(units > 0), units)

    def params(self, s):
        return {self.name: (2 * self.d + 1) * s.units + s.block * (self.d + self.block_norm)}

    def macs(self, s, frames):
        return {self.name: 2 * frames.t * self.d * s.units}

    def latency(self, s, frames):
        return ("layer", self.l), {"ffn": s.runs, "ffn_macs": 2 * frames.t * self.d * s.units / 1e6}

    def decide(self, binary, decided):
        block, units = self.gate_values(binary)
        block = bool(block > 0)
        return FeedForwardKept(block, _kept(units) if block else torch.zeros(0, dtype=torch.long))

    def shape(self, kept, fields):
        fields["layers"][self.l].update(ffn=kept.block, ffn_dim=len(kept.units))

    def slice(self, state, decided, soft):
        kept: FeedForwardKept = decided[self.name]
        prefix = f"encoder.layers.{self.l}."
        f = prefix + "feed_forward."
        if not kept.block:
            for key in [k for k in state if k.startswith(f)]:
                del state[key]
            if self.block_norm:
                _drop_pre_norm(state, prefix + "final_layer_norm")
            return
        block, units = (v.detach().cpu().double() for v in self.gate_values(soft))
        for name in ("intermediate_dense.weight", "intermediate_dense.bias"):
            state[f + name] = state[f + name][kept.units]
        state[f + "output_dense.weight"] = _scaled(state[f + "output_dense.weight"][:, kept.units],
                                                   block * units[kept.units], 1)
        state[f + "output_dense.bias"] = _scaled(state[f + "output_dense.bias"], block.expand(self.d), 0)


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


# --- the encoder as a list of parts ---------------------------------------------------------------

GATED_PARTS = (ConvPart, AttentionPart, FeedForwardPart)  # their gate kinds, in this order, are GATE_KINDS


def encoder_parts(spec: EncoderSpec) -> list[Part]:
    """Every part of an encoder of ``spec``, in the order of the forward pass (and of the gates)."""
    parts: list[Part] = [ConvPart(spec, c) for c in range(len(spec.conv_channels))]
    parts += [ProjectionPart(spec), PositionalConvPart(spec), FramePart(spec)]
    attention = []
    for l in range(len(spec.layers)):
        attention.append(AttentionPart(spec, l))
        parts += [LayerFramePart(spec, l), attention[-1], FeedForwardPart(spec, l)]
    if spec.num_buckets:
        parts.append(RelativePositionPart(spec, attention))
    return parts


def cost_terms(spec: EncoderSpec, keep: GateValues | None, cost) -> dict[str, Number]:
    """Every part's terms of ``cost(part, sizes)``: of the gate values ``keep`` (expected sizes),
    or with ``keep`` None of ``spec`` itself, as it runs."""
    terms: dict[str, Number] = {}
    for part in encoder_parts(spec):
        terms.update(cost(part, part.sizes(spec) if keep is None else part.expected_sizes(keep)))
    return terms


@dataclass
class Decided:
    """What 0/1 decisions keep, part by part (``kept``, by part name), and the shrunk encoder's
    spec that makes: ``pruned_spec`` is its ``spec``, and ``shrink`` slices to exactly it."""

    kept: dict
    spec: EncoderSpec


def decide_parts(spec: EncoderSpec, values: GateValues) -> Decided:
    """What gate values > 0 keep of the dense ``spec``."""
    binary = values.layout.values((values.flat.detach().cpu() > 0).double())
    parts = encoder_parts(spec)
    kept: dict = {}
    for part in parts:
        kept[part.name] = part.decide(binary, kept)
    fields = spec.to_dict()
    for part in parts:
        part.shape(kept[part.name], fields)
    return Decided(kept, EncoderSpec.from_dict(fields))


# --- latency features ------------------------------------------------------------------------------
# One feature function per part serves the fit (``bench.cost_model``), ``predict_ms`` (integers)
# and ``expected_ms`` (gate tensors): values per input, in millions.


def conv_features(length: int, kernel: int, channels_in, channels_out, channels_out_squared) -> dict:
    """``channels_out_squared``: C_out^2 of a shape, E[C_out^2] of keep probabilities."""
    return {"macs": length * kernel * channels_in * channels_out / 1e6, "outputs": length * channels_out / 1e6,
            "outputs_squared": length * channels_out_squared / 1e9, "const": 1.0}


def projection_features(t: int, d: int, channels) -> dict:
    return {"macs": t * d * channels / 1e6, "const": 1.0}
