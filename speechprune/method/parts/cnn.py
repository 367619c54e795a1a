"""The CNN's parts: each conv layer (its channels gated) and the feature projection that reads
the last one; and their latency features."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from ...model.spec import EncoderSpec
from ..latency_steps import CONV_INPUTS, CONV_OUTPUTS, PROJECTION
from .base import Number, Part, Width, group_gates, kept_indices, scaled

if TYPE_CHECKING:
    from ..gates import GateValues


@dataclass
class ConvSizes:
    inputs: Number  # input channels (1: the waveform)
    channels: Number  # output channels
    channels_squared: Number  # C_out^2; E[C_out^2] = (sum p)^2 + sum p (1 - p) of keep probabilities


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

    def step_factor(self, steps, s):
        inputs = steps.factor(CONV_INPUTS.format(self.c), s.inputs) if self.c else 1.0
        return steps.factor(CONV_OUTPUTS.format(self.c), s.channels) * inputs

    def decide(self, binary, decided):
        return kept_indices(self.kept_channels(binary))

    def widths(self, kept, layout):
        gates = group_gates(layout, "conv", self.c)
        return [] if gates is None else [Width(self.name, gates, len(kept), self)]

    def resize(self, fields, where, width):
        fields["conv_channels"][self.c] = width

    def shape(self, kept, fields):
        self.resize(fields, None, len(kept))

    def slice(self, state, decided, soft):
        kept = decided[self.name]
        prefix = f"feature_extractor.conv_layers.{self.c}."
        weight = state[prefix + "conv.weight"][kept]  # (C_kept, C_in, k)
        if self.c:  # the previous layer's kept channels, its soft values folded in
            previous, scale = _previous_channels(decided, soft, self.c, self.inputs)
            weight = scaled(weight[:, previous], scale, 1)
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

    def step_factor(self, steps, s):
        return steps.factor(PROJECTION, s.channels)

    def slice(self, state, decided, soft):
        kept, scale = _previous_channels(decided, soft, self.last, self.inputs)
        for name in ("feature_projection.layer_norm.weight", "feature_projection.layer_norm.bias"):
            if name in state:
                state[name] = state[name][kept]
        name = "feature_projection.projection.weight"
        state[name] = scaled(state[name][:, kept], scale, 1)


def conv_features(length: int, kernel: int, channels_in, channels_out, channels_out_squared) -> dict:
    """Features of a conv layer's time (``method.latency``), per input, in millions;
    ``channels_out_squared``: C_out^2 of a shape, E[C_out^2] of keep probabilities."""
    return {"macs": length * kernel * channels_in * channels_out / 1e6, "outputs": length * channels_out / 1e6,
            "outputs_squared": length * channels_out_squared / 1e9, "const": 1.0}


def projection_features(t: int, d: int, channels) -> dict:
    return {"macs": t * d * channels / 1e6, "const": 1.0}
