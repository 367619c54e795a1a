"""The architecture of an encoder, without weights: ``EncoderSpec`` and one ``LayerSpec`` per
transformer layer, and the CNN's frame arithmetic (how many frames a number of samples makes).

A dense model and a shrunk one are the same spec with other numbers; ``config.json`` of a
shrunk model folder and ``encoder.json`` of a run folder hold ``EncoderSpec.to_dict()``.
Imports only torch and the standard library: it is part of the self-contained model code that
``speechprune shrink`` writes (see ``encoder``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch


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
        """Stored (q/k widths, v/o widths) of each head."""
        h = len(self.heads)
        return (self.qk_dims or [self.qk_dim] * h, self.vo_dims or [self.vo_dim] * h)

    @property
    def runtime_width(self) -> int:
        """The width every head runs at: SDPA's fused kernels need one width for q, k and v, so
        each head's activations are zero-padded to it (the projections run at the stored
        widths). The one place of this rule: attention, MACs and latency read it, so padding
        to hardware-friendly widths (e.g. multiples of 8) is a change here."""
        return max(self.qk_dim, self.vo_dim)


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


# Frame arithmetic on plain integers (the tensor form for padding masks is
# ``EncoderSpec.output_lengths``, as transformers computes it).


def conv_lengths(spec: EncoderSpec, samples: int) -> list[int]:
    """Output length of every conv layer for one input of ``samples`` (0 once the input is
    shorter than a layer's kernel: the CNN makes no frame from it)."""
    lengths = []
    for kernel, stride in zip(spec.conv_kernels, spec.conv_strides):
        samples = (samples - kernel) // stride + 1 if samples >= kernel else 0
        lengths.append(samples)
    return lengths


def frames(spec: EncoderSpec, samples: int) -> int:
    """Frames T' the CNN makes from ``samples`` (0 when the input is shorter than its receptive field)."""
    return conv_lengths(spec, samples)[-1]


def min_samples(spec: EncoderSpec) -> int:
    """The CNN's receptive field: the shortest input that makes one frame."""
    samples = 1
    for kernel, stride in reversed(list(zip(spec.conv_kernels, spec.conv_strides))):
        samples = (samples - 1) * stride + kernel
    return samples
