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

The encoder is split by part: ``spec`` (sizes), ``masks``, ``attention``, ``layers`` (the
other blocks), ``inference`` (faster CPU paths of two of them, the ones an encoder is built
with) and this module (the forward pass). Together with ``hf_model`` they import only
torch, transformers, the standard library and each other, on purpose: ``speechprune shrink``
concatenates them into the one self-contained ``modeling_speechprune.py`` of a model folder
(``folders.shrunk.modeling_source``), which runs without speechprune installed. Their imports
of each other are single ``from .x import ...`` lines, which the concatenation drops.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
from torch import nn

from .inference import InferenceConvLayer, InferencePositionalConv
from .layers import FeatureExtractor, FeatureProjection, TransformerEncoder
from .masks import EncoderMasks
from .spec import EncoderSpec


@dataclass
class EncoderOutput:
    last_hidden_state: torch.Tensor  # (B, T', D)
    hidden_states: tuple[torch.Tensor, ...]  # L + 1 tensors: the input of layer 1, then each layer's output
    frame_mask: torch.Tensor | None  # (B, T') bool, True on real frames; None when no attention_mask


class EncoderModules:
    """The encoder's modules and forward pass, shared by ``Encoder`` (a plain nn.Module) and
    the transformers wrapper of shrunk models (a PreTrainedModel)."""

    def build_encoder(self, spec: EncoderSpec) -> None:
        self.spec = spec
        with warnings.catch_warnings():  # pruned models have zero-sized layers; torch warns on their init
            warnings.filterwarnings("ignore", message="Initializing zero-element tensors is a no-op")
            self.feature_extractor = FeatureExtractor(spec, InferenceConvLayer)
            self.feature_projection = FeatureProjection(spec)
            if spec.masked_spec_embed:  # unused at inference; kept so checkpoints round-trip
                self.masked_spec_embed = nn.Parameter(torch.zeros(spec.hidden_size))
            self.encoder = TransformerEncoder(spec, InferencePositionalConv)

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
        last_conv_mask = masks.get("conv", len(self.spec.conv_channels) - 1) if masks is not None else None
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
