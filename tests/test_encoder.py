"""The encoder reproduces the transformers models exactly, and its masks mean what they say."""

import pytest
import torch

from speechprune.method.gates import GateLayout
from speechprune.model import inference
from speechprune.model.layers import _layer_norm
from helpers.data import batch_of_unequal_lengths
from helpers.models import ALL_KINDS, build_model, encoder_from


def transformers_states(hf, waveforms, attention_mask):
    """``hf``'s output, and its hidden states as speechprune defines them: the input of layer 1,
    then each layer's own output. transformers 5 returns exactly these; 4.x put the final layer
    norm's output last for pre-LN (Large) models, so the layers' outputs are taken by hooks."""
    outputs = []

    def keep(module, inputs, output):
        outputs.append(output[0] if isinstance(output, tuple) else output)  # WavLM: (states, position bias)

    hooks = [layer.register_forward_hook(keep) for layer in hf.encoder.layers]
    try:
        expected = hf(waveforms, attention_mask=attention_mask, output_hidden_states=True)
    finally:
        for hook in hooks:
            hook.remove()
    return expected, (expected.hidden_states[0], *outputs)


@pytest.mark.parametrize("family,style", ALL_KINDS)
@pytest.mark.parametrize("with_mask", [False, True])
def test_all_ones_masks_equal_transformers(family, style, with_mask):
    hf = build_model(family, style)
    encoder = encoder_from(hf, family)
    assert sum(p.numel() for p in encoder.parameters()) == sum(p.numel() for p in hf.parameters())
    waveforms, attention_mask = batch_of_unequal_lengths()
    attention_mask = attention_mask if with_mask else None
    ones = GateLayout(encoder.spec).values(torch.ones(GateLayout(encoder.spec).size)).masks()
    with torch.no_grad():
        expected, states = transformers_states(hf, waveforms, attention_mask)
        unmasked = encoder(waveforms, attention_mask)
        masked = encoder(waveforms, attention_mask, ones)
    assert len(masked.hidden_states) == len(expected.hidden_states) == len(states) == 4
    for ours in (unmasked, masked):
        for mine, theirs in zip(ours.hidden_states, states):
            assert (mine - theirs).abs().max() < 1e-5
        assert (ours.last_hidden_state - expected.last_hidden_state).abs().max() < 1e-5


@pytest.mark.parametrize("family,style", [("wav2vec2", "base"), ("wavlm", "large")])
def test_removed_value_dims_equal_zeroed_output_columns(family, style):
    hf = build_model(family, style)
    encoder = encoder_from(hf, family)
    layout = GateLayout(encoder.spec)
    z = torch.ones(layout.size)
    values = layout.values(z)
    values.get("vo", 1)[2] = 0  # head 2 of layer 1 contributes nothing
    values.get("int", 0)[:10] = 0  # ten FFN units of layer 0
    waveforms, _ = batch_of_unequal_lengths()
    with torch.no_grad():
        masked = encoder(waveforms, None, values.masks())
        d = encoder.spec.head_dim
        encoder.encoder.layers[1].attention.out_proj.weight[:, 2 * d : 3 * d] = 0
        encoder.encoder.layers[0].feed_forward.output_dense.weight[:, :10] = 0
        zeroed = encoder(waveforms)
    assert (masked.last_hidden_state - zeroed.last_hidden_state).abs().max() < 1e-5


def test_removed_blocks_are_identity_branches():
    hf = build_model("hubert", "large")
    encoder = encoder_from(hf, "hubert")
    layout = GateLayout(encoder.spec)
    values = layout.values(torch.ones(layout.size))
    for l in range(3):
        values.get("mha", l).zero_()
        values.get("ffn", l).zero_()
    waveforms, _ = batch_of_unequal_lengths()
    with torch.no_grad():
        out = encoder(waveforms, None, values.masks())
    # pre-LN layers with both blocks gone pass their input through unchanged
    assert torch.equal(out.hidden_states[0], out.hidden_states[3])


def test_layer_norm_over_original_count_treats_pruned_channels_as_zeros():
    torch.manual_seed(0)
    norm = torch.nn.LayerNorm(8)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
        norm.bias.uniform_(-1, 1)
    x = torch.randn(4, 8)
    kept = torch.tensor([0, 2, 3, 7])
    padded = torch.zeros_like(x)
    padded[:, kept] = x[:, kept]
    full = norm(padded)[:, kept]
    sliced = torch.nn.LayerNorm(4)
    with torch.no_grad():
        sliced.weight.copy_(norm.weight[kept])
        sliced.bias.copy_(norm.bias[kept])
    assert (_layer_norm(x[:, kept], sliced, count=8) - full).abs().max() < 1e-6
    assert (sliced(x[:, kept]) - full).abs().max() > 1e-3  # plain slicing would be wrong


_one_pass = inference.group_norm_conv


@pytest.mark.parametrize("activation,bias", [("gelu", False), ("gelu_new", True), ("relu", True)])
def test_group_norm_conv_in_one_pass_equals_conv_norm_activation(monkeypatch, activation, bias):
    """Layer 0's inference path (statistics from the frames' covariance, chunked output) is
    the function of its training path: conv -> GroupNorm -> activation."""
    torch.manual_seed(0)
    hf = build_model("wav2vec2", "base", feat_extract_activation=activation, conv_bias=bias)
    layer = encoder_from(hf, "wav2vec2").feature_extractor.conv_layers[0]
    with torch.no_grad():
        layer.layer_norm.weight.uniform_(0.5, 1.5)
        layer.layer_norm.bias.uniform_(-0.5, 0.5)
    waveforms = torch.randn(3, 1, 4001) * torch.tensor([1.0, 0.01, 30.0])[:, None, None] + 0.5  # scales, offset
    waveforms[0, 0, 3000:] = 0  # padding at the end
    taken = []
    monkeypatch.setattr(inference, "CHUNK_BYTES", 4 * layer.conv.out_channels * 100)  # 100 frames a chunk
    monkeypatch.setattr(inference, "group_norm_conv", lambda *a: taken.append(1) or _one_pass(*a))
    plain = layer(waveforms)  # grad enabled: the plain path
    with torch.inference_mode():
        fast = layer(waveforms)
    assert taken == [1] and fast.shape == plain.shape and fast.shape[-1] > 700  # several chunks and a remainder
    assert (fast - plain).abs().max() < 1e-5 * plain.abs().max()


_chunked = inference.layer_norm_conv


@pytest.mark.parametrize("index", [0, 1])
@pytest.mark.parametrize("activation,bias", [("gelu", True), ("relu", False)])
def test_layer_norm_conv_in_chunks_equals_conv_norm_activation(monkeypatch, index, activation, bias):
    """A LayerNorm conv layer's inference path (norm and activation in chunks of frames, layer 0's
    conv as a matmul of its frames) is the function of its training path, masks included, on a
    shrunk layer that normalises over more channels than it keeps."""
    torch.manual_seed(0)
    hf = build_model("wav2vec2", "large", feat_extract_activation=activation, conv_bias=bias)
    layer = encoder_from(hf, "wav2vec2").feature_extractor.conv_layers[index]
    assert layer.norm_kind == "layer"
    with torch.no_grad():
        layer.layer_norm.weight.uniform_(0.5, 1.5)
        layer.layer_norm.bias.uniform_(-0.5, 0.5)
    layer.norm_count = layer.conv.out_channels + 3  # as a shrunk layer: three channels pruned away
    inputs = layer.conv.in_channels
    x = torch.randn(3, inputs, 4001 if index == 0 else 900) * torch.tensor([1.0, 0.01, 30.0])[:, None, None] + 0.5
    mask = (torch.rand(layer.conv.out_channels) > 0.3).float()
    input_mask = torch.rand(inputs) if index else None
    taken = []
    monkeypatch.setattr(inference, "CHUNK_BYTES", 4 * layer.conv.out_channels * 100)  # 100 frames a chunk
    monkeypatch.setattr(inference, "layer_norm_conv", lambda *a: taken.append(1) or _chunked(*a))
    plain = layer(x, mask, input_mask)  # grad enabled: the plain path
    with torch.inference_mode():
        fast = layer(x, mask, input_mask)
    assert taken == [1] and fast.shape == plain.shape and fast.shape[-1] > 300  # several chunks and a remainder
    assert fast.is_contiguous()  # channel-major: the next conv reads it at full speed
    assert (fast - plain).abs().max() < 1e-5 * plain.abs().max()


@pytest.mark.parametrize(
    "family,overrides",
    [
        ("hubert", dict(conv_pos_batch_norm=True, feat_proj_layer_norm=False)),
        ("wav2vec2", dict(num_conv_pos_embeddings=15, hidden_act="relu")),  # odd kernel: no trim
    ],
)
def test_config_variants_equal_transformers(family, overrides):
    hf = build_model(family, "base", **overrides)
    with torch.no_grad():  # give BatchNorm real running statistics
        for module in hf.modules():
            if isinstance(module, torch.nn.BatchNorm1d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
    encoder = encoder_from(hf, family)
    waveforms, _ = batch_of_unequal_lengths()
    with torch.no_grad():
        expected = hf(waveforms).last_hidden_state
        assert (encoder(waveforms).last_hidden_state - expected).abs().max() < 1e-5


def test_positional_conv_kernel_kept_in_inference_follows_its_parameters():
    hf = build_model("wav2vec2", "base")
    pos_conv = encoder_from(hf, "wav2vec2").encoder.pos_conv_embed
    x = torch.randn(2, 50, hf.config.hidden_size)
    with torch.inference_mode():
        first = pos_conv(x)
    with torch.no_grad():
        pos_conv.conv.parametrizations.weight.original1.mul_(2.0)  # weight_v: a new kernel direction scale
        pos_conv.conv.parametrizations.weight.original0.add_(0.5)  # weight_g
    with torch.inference_mode():
        kept = pos_conv(x)
    plain = pos_conv(x)  # grad enabled: the kernel normalised anew
    assert (kept - plain).abs().max() < 1e-6 and (kept - first).abs().max() > 1e-2
