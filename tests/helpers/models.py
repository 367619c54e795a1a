"""Tiny models of every family and style with the real layout, specs, and shrunk encoders."""

from __future__ import annotations

from pathlib import Path

import torch
import transformers

from speechprune.folders.shrunk import write_model_folder
from speechprune.method.gates import GateLayout, GateValues
from speechprune.model.encoder import Encoder
from speechprune.model.families import FAMILIES
from speechprune.model.loading import quiet_transformers
from speechprune.shrink.slicing import shrink_encoder

FAMILY_CLASSES = {
    "wav2vec2": ("Wav2Vec2Config", "Wav2Vec2Model"),
    "hubert": ("HubertConfig", "HubertModel"),
    "wavlm": ("WavLMConfig", "WavLMModel"),
}
STYLES = ("base", "large")
ALL_KINDS = [(f, s) for f in FAMILY_CLASSES for s in STYLES]


def tiny_config(family: str, style: str = "base", **overrides):
    """A small config with the real layout: 7-layer CNN at 20 ms frames, pos conv, 3 layers."""
    config_class = getattr(transformers, FAMILY_CLASSES[family][0])
    kwargs = dict(
        hidden_size=48,
        num_hidden_layers=3,
        num_attention_heads=4,
        intermediate_size=96,
        conv_dim=(24,) * 7,
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=4,
        do_stable_layer_norm=style == "large",
        feat_extract_norm="layer" if style == "large" else "group",
        conv_bias=style == "large",
    )
    if family == "wavlm":
        kwargs.update(num_buckets=32, max_bucket_distance=64)
    kwargs.update(overrides)
    return config_class(**kwargs)


def build_model(family: str, style: str = "base", task: str | None = None, seed: int = 0, **overrides):
    """A random-weight transformers model (the base `...Model`, or a task class like `...ForCTC`)."""
    config = tiny_config(family, style, **overrides)
    name = FAMILY_CLASSES[family][1] if task is None else FAMILY_CLASSES[family][1].replace("Model", task)
    torch.manual_seed(seed)
    return getattr(transformers, name)(config).eval()


def save_model(folder: Path, family: str, style: str = "base", task: str | None = None, **overrides) -> Path:
    with quiet_transformers():
        build_model(family, style, task, **overrides).save_pretrained(folder)
    return folder


def tiny_spec(family="wav2vec2", style="base"):
    return FAMILIES[family].spec_from_config(build_model(family, style).config)


def base_spec(family="wav2vec2"):
    """The spec of the published Base-size configuration (transformers' defaults)."""
    fam = FAMILIES[family]
    return fam.spec_from_config(getattr(transformers, fam.base_class.replace("Model", "Config"))())


def encoder_from(hf_model, family: str) -> Encoder:
    fam = FAMILIES[family]
    encoder = Encoder(fam.spec_from_config(hf_model.config)).eval()
    encoder.load_state_dict(fam.to_encoder_keys(hf_model.state_dict()), strict=True)
    return encoder


def edge_case_values(layout: GateLayout, seed: int) -> GateValues:
    """Random 0/1 gates plus the edge cases of method.md forced in."""
    g = torch.Generator().manual_seed(seed)
    z = (torch.rand(layout.size, generator=g) > 0.4).double()
    values = layout.values(z)
    values.get("mha", 0).fill_(1)
    values.get("head", 0).fill_(1)
    values.get("qk", 0)[0] = 0  # head 0: no query/key dims, value dims kept (uniform attention)
    values.get("vo", 0)[0, :3] = 1
    values.get("vo", 0)[1] = 0  # head 1: no value dims (contributes nothing)
    values.get("qk", 0)[1, :2] = 1
    values.get("head", 1).zero_()  # layer 1: no heads, block kept
    values.get("mha", 1).fill_(1)
    values.get("ffn", 1).zero_()  # layer 1: no FFN
    values.get("mha", 2).zero_()  # layer 2: both blocks gone
    values.get("ffn", 2).zero_()
    values.get("conv", 6)[: layout.group("conv", 6).size // 2] = 0  # half the last conv channels
    return values


def shrunk_encoder(family: str, style: str, seed: int = 0, **overrides) -> Encoder:
    """A random model shrunk at the edge cases of `edge_case_values` (heads of uneven widths, a
    layer without heads, blocks removed), plus a kept FFN block without units in layer 3."""
    dense = encoder_from(build_model(family, style, seed=seed, **overrides), family)
    values = edge_case_values(GateLayout(dense.spec), seed=seed)
    if len(dense.spec.layers) > 3:
        values.get("ffn", 3).fill_(1)
        values.get("int", 3).zero_()
    spec, state = shrink_encoder(dense.spec, dense.state_dict(), values.layout, values.flat)
    small = Encoder(spec).eval()
    small.load_state_dict(state, strict=True)
    return small


def write_shrunk(folder: Path, family: str, style: str, **overrides) -> Path:
    """``shrunk_encoder`` saved as a model folder like `speechprune shrink` writes it."""
    small = shrunk_encoder(family, style, **overrides)
    preprocessor = {"sampling_rate": 16000, "do_normalize": True, "return_attention_mask": style == "large"}
    write_model_folder(folder, small.spec, small.state_dict(), dtype="float32", card="card", provenance={},
                       preprocessor=preprocessor)
    return folder
