"""Exact parameter accounting: dense counts, sliced counts, and the expected size."""

import pytest
import torch
import transformers

from speechprune.method.accounting import dense_count, kept_structure, parameter_count, pruned_spec, spec_parameter_count
from speechprune.method.gates import GATE_KINDS, GateLayout, GateValues, HardConcreteGates
from speechprune.model.encoder import Encoder
from speechprune.model.families import FAMILIES
from helpers.models import ALL_KINDS, build_model, edge_case_values
from helpers.sliced_count import sliced_parameter_count


@pytest.mark.parametrize(
    "family,config,expected",
    [
        ("wav2vec2", {}, 94_371_712),
        ("hubert", {}, 94_371_712),
        ("wavlm", {}, 94_381_936),
        ("wav2vec2", "large", 315_438_720),
        ("wavlm", "large", 315_456_704),
    ],
)
def test_dense_count_of_published_configs(family, config, expected):
    fam = FAMILIES[family]
    if config == "large":
        config = dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096,
                      do_stable_layer_norm=True, feat_extract_norm="layer", conv_bias=True)
    hf_config = getattr(transformers, fam.base_class.replace("Model", "Config"))(**config)
    spec = fam.spec_from_config(hf_config)
    for kinds in (GATE_KINDS, ("head", "int")):
        assert dense_count(spec, GateLayout(spec, kinds)) == expected


@pytest.mark.parametrize("family,style", ALL_KINDS)
@pytest.mark.parametrize("seed", [0, 1])
def test_analytic_count_equals_count_of_sliced_tensors(family, style, seed):
    encoder = Encoder(FAMILIES[family].spec_from_config(build_model(family, style).config))
    layout = GateLayout(encoder.spec)
    values = edge_case_values(layout, seed)
    analytic = parameter_count(encoder.spec, values).item()
    assert analytic == sliced_parameter_count(encoder, values)
    ones = layout.values(torch.ones(layout.size, dtype=torch.float64))
    assert parameter_count(encoder.spec, ones).item() == sum(p.numel() for p in encoder.parameters())


@pytest.mark.parametrize("family,style", ALL_KINDS)
def test_count_of_the_pruned_spec_is_the_count_of_its_decisions(family, style):
    """Each part's one parameter formula, on the sizes of the shrunk spec, gives what it gives on
    the 0/1 gates that spec comes from, and what the shrunk model holds."""
    spec = FAMILIES[family].spec_from_config(build_model(family, style).config)
    values = edge_case_values(GateLayout(spec), 2)
    pruned = pruned_spec(spec, values)
    assert spec_parameter_count(pruned) == parameter_count(spec, values).item()
    assert spec_parameter_count(pruned) == sum(p.numel() for p in Encoder(pruned).parameters())
    assert spec_parameter_count(spec) == sum(p.numel() for p in Encoder(spec).parameters())


def test_structure_subsets_count_ungated_structures_as_kept():
    encoder = Encoder(FAMILIES["hubert"].spec_from_config(build_model("hubert").config))
    layout = GateLayout(encoder.spec, ("conv", "head", "int"))
    values = layout.values((torch.rand(layout.size, generator=torch.Generator().manual_seed(3)) > 0.5).double())
    assert parameter_count(encoder.spec, values).item() == sliced_parameter_count(encoder, values)


@pytest.mark.parametrize("family,ste", [("wav2vec2", True), ("wavlm", True), ("wavlm", False)])
def test_expected_size_is_the_mean_size_of_sampled_networks(family, ste):
    spec = FAMILIES[family].spec_from_config(build_model(family, "large").config)
    layout = GateLayout(spec)
    gates = HardConcreteGates(layout, ste=ste)
    with torch.no_grad():
        gates.log_alpha.copy_(torch.randn(layout.size, generator=torch.Generator().manual_seed(0)) * 1.5)
    expected = parameter_count(spec, layout.values(gates.keep_probability().double())).item()
    generator = torch.Generator().manual_seed(1)
    counts = torch.tensor(
        [parameter_count(spec, layout.values((gates.sample(generator) > 0).double())).item() for _ in range(600)]
    )
    standard_error = counts.std().item() / len(counts) ** 0.5
    assert abs(counts.mean().item() - expected) < 4 * standard_error


def test_kept_structure_reports_edge_cases():
    spec = FAMILIES["wavlm"].spec_from_config(build_model("wavlm").config)
    layout = GateLayout(spec)
    kept = kept_structure(spec, edge_case_values(layout, 0))
    layer0, layer1, layer2 = kept["layers"]
    assert 0 in layer0["heads"] and layer0["qk_dims"][layer0["heads"].index(0)] == 0
    assert 1 not in layer0["heads"]
    assert layer1["attention"] and layer1["heads"] == [] and not layer1["ffn"] and layer1["ffn_units"] == 0
    assert not layer2["attention"] and not layer2["ffn"]
    assert kept["conv_channels"][6] <= 12
