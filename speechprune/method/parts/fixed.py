"""The parts no gate removes: the positional convolution, the encoder's own few parameters,
and each transformer layer's frame (post-LN norms, its constant time)."""

from __future__ import annotations

from ...model.spec import EncoderSpec
from .base import Part


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
