"""Shrinking: the sliced encoder equals the masked one, and stores exactly the counted parameters."""

import pytest
import torch

from speechprune.method.accounting import parameter_count
from speechprune.method.gates import GateLayout, HardConcreteGates
from speechprune.model.encoder import Encoder
from speechprune.shrink.slicing import shrink_encoder
from helpers.data import batch_of_unequal_lengths
from helpers.models import ALL_KINDS, build_model, edge_case_values, encoder_from


def dense_encoder(family, style, seed=0, **overrides):
    return encoder_from(build_model(family, style, seed=seed, **overrides), family)


def shrunk_pair(encoder, values):
    layout = values.layout
    spec, state = shrink_encoder(encoder.spec, encoder.state_dict(), layout, values.flat)
    small = Encoder(spec).eval()
    small.load_state_dict(state, strict=True)
    return small


def assert_same_outputs(big, small, masks, attention_mask=None):
    waveforms, padding = batch_of_unequal_lengths()
    padding = padding if attention_mask else None
    with torch.no_grad():
        expected = big(waveforms, padding, masks)
        got = small(waveforms, padding)
    for a, b in zip(expected.hidden_states + (expected.last_hidden_state,), got.hidden_states + (got.last_hidden_state,)):
        assert ((a - b).abs().max() / a.abs().max()) < 1e-4


@pytest.mark.parametrize("family,style", ALL_KINDS)
@pytest.mark.parametrize("attention_mask", [False, True])
def test_shrunk_equals_masked_with_edge_cases(family, style, attention_mask):
    encoder = dense_encoder(family, style)
    values = edge_case_values(GateLayout(encoder.spec), seed=0)
    small = shrunk_pair(encoder, values)
    assert sum(p.numel() for p in small.parameters()) == parameter_count(encoder.spec, values).item()
    assert_same_outputs(encoder, small, values.masks(), attention_mask)


def test_wavlm_heads_removed_in_layer_zero_keep_bias_for_later_layers():
    encoder = dense_encoder("wavlm", "base")
    layout = GateLayout(encoder.spec)
    values = layout.values(torch.ones(layout.size, dtype=torch.float64))
    values.get("head", 0)[[0, 2]] = 0  # layer 0 loses heads 0 and 2; later layers keep them
    values.get("head", 1)[[1, 2]] = 0
    values.get("mha", 2).zero_()
    small = shrunk_pair(encoder, values)
    assert small.spec.layers[0].heads == [1, 3] and small.spec.layers[1].heads == [0, 3]
    assert small.spec.rel_heads == [0, 1, 3]
    assert_same_outputs(encoder, small, values.masks())


def test_uniform_attention_head_and_layer_without_heads():
    encoder = dense_encoder("wav2vec2", "large")
    layout = GateLayout(encoder.spec)
    values = layout.values(torch.ones(layout.size, dtype=torch.float64))
    values.get("qk", 0)[1] = 0  # no query/key dims: attends uniformly, still contributes
    values.get("head", 1).zero_()  # no heads at all, block kept: adds its output bias
    small = shrunk_pair(encoder, values)
    assert small.spec.layers[0].qk_dims == [12, 0, 12, 12] and small.spec.layers[1].heads == []
    assert_same_outputs(encoder, small, values.masks(), attention_mask=True)


def test_layer_norm_over_pruned_conv_channels():
    encoder = dense_encoder("hubert", "large")  # LayerNorm in every conv layer and the projection
    layout = GateLayout(encoder.spec, ("conv",))
    values = layout.values((torch.rand(layout.size, generator=torch.Generator().manual_seed(0)) > 0.3).double())
    small = shrunk_pair(encoder, values)
    assert small.spec.conv_channels != encoder.spec.conv_channels
    assert small.spec.conv_norm_channels == encoder.spec.conv_norm_channels
    assert_same_outputs(encoder, small, values.masks())


@pytest.mark.parametrize(
    "family,style,overrides",
    [("wav2vec2", "base", {}), ("wavlm", "large", {}), ("hubert", "base", {"feat_proj_layer_norm": False})],
)
def test_relaxed_gate_values_are_folded_into_the_weights(family, style, overrides):
    encoder = dense_encoder(family, style, **overrides)
    layout = GateLayout(encoder.spec)
    gates = HardConcreteGates(layout, ste=False)
    with torch.no_grad():
        gates.log_alpha.copy_(torch.randn(layout.size, generator=torch.Generator().manual_seed(1)) + 1.5)
    soft = gates.deterministic().double()
    assert ((soft > 0) & (soft < 1)).sum() > 100
    values = layout.values(soft)
    small = shrunk_pair(encoder, values)
    assert_same_outputs(encoder, small, values.masks())


@pytest.mark.parametrize("family", ["wav2vec2", "wavlm"])
def test_gates_of_a_shrunk_model_set_to_one_change_nothing(family):
    """analyze gates shrunk models too: their gates cover the stored widths, narrower than the
    padded run-time width where heads differ (or where all q/k dims are gone)."""
    encoder = dense_encoder(family, "base")
    values = edge_case_values(GateLayout(encoder.spec), seed=0)
    small = shrunk_pair(encoder, values)
    assert small.spec.layers[0].qk_dims is not None  # ragged heads
    layout = GateLayout(small.spec)
    ones = layout.values(torch.ones(layout.size, dtype=torch.float64))
    waveforms, _ = batch_of_unequal_lengths()
    with torch.no_grad():
        plain, gated = small(waveforms), small(waveforms, None, ones.masks())
    assert torch.equal(plain.last_hidden_state, gated.last_hidden_state)
