"""Shrunk models compose with torch's dynamic int8 quantization and torch.compile."""

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from transformers import AutoModel

import speechprune
from speechprune.artifact import write_model_folder
from speechprune.encoder import Encoder
from speechprune.gates import GateLayout
from speechprune.loading import quiet_transformers
from speechprune.shrink import shrink_encoder
from speechprune.synth import speechlike
from conftest import build_model
from test_accounting import edge_case_values
from test_encoder import encoder_from

# Base's widths (768 wide, 12 heads of 64, 3072 FFN units, 512 CNN channels) in 4 layers
BASE_SHAPE = dict(hidden_size=768, num_attention_heads=12, intermediate_size=3072, num_hidden_layers=4,
                  conv_dim=(512,) * 7, num_conv_pos_embeddings=128, num_conv_pos_embedding_groups=16)


def shrunk_encoder(family: str, style: str, seed: int = 0, **overrides) -> Encoder:
    """A random model shrunk at the edge cases of test_accounting (heads of uneven widths, a
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


def speech(seconds: float = 2.0, seed: int = 0) -> torch.Tensor:
    """(1, T) generated speech, normalised like the models' inputs."""
    audio = torch.from_numpy(speechlike(seconds, 16000, np.random.default_rng(seed)))[None]
    return (audio - audio.mean()) / audio.std()


@pytest.mark.parametrize("family,style", [("wav2vec2", "base"), ("hubert", "large"), ("wavlm", "large")])
def test_dynamic_int8_through_both_loaders(family, style, tmp_path):
    folder = write_shrunk(tmp_path / "model", family, style, **BASE_SHAPE)
    spec = speechprune.load(folder).spec
    assert spec.layers[0].qk_dims is not None and spec.layers[1].heads == [] and spec.layers[3].ffn_dim == 0
    waveforms = speech()
    with quiet_transformers():
        remote = AutoModel.from_pretrained(folder, trust_remote_code=True).eval()
    for model in (speechprune.load(folder), remote):
        with torch.no_grad():
            expected = model(waveforms).last_hidden_state
            quantized = torch.ao.quantization.quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8)
            assert type(quantized.encoder.layers[0].attention.q_proj) is not nn.Linear
            got = quantized(waveforms).last_hidden_state
        cosine = nn.functional.cosine_similarity(got, expected, dim=-1)  # (1, T')
        assert cosine.min() > 0.99


def test_fullgraph_compile_of_uneven_heads():
    small = shrunk_encoder("wavlm", "large")
    assert small.encoder.layers[0].attention.slots["qk"] is not None
    waveforms = torch.randn(2, 8000, generator=torch.Generator().manual_seed(0))
    compiled = torch.compile(small, fullgraph=True, backend="eager")  # graph capture is what is checked here
    with torch.no_grad():
        expected = small(waveforms).last_hidden_state
        torch._dynamo.reset()
        assert (compiled(waveforms).last_hidden_state - expected).abs().max() < 1e-5


def test_dense_layers_run_without_padding():
    dense = encoder_from(build_model("wav2vec2", "base"), "wav2vec2")
    for layer in dense.encoder.layers:
        assert set(layer.attention.slots.values()) == {None}
