"""Exact, analytic parameter accounting.

``parameter_breakdown`` sums each part's ``params`` (``method/parts/``, where every structure's
count is written) over its sizes in closed form in the gate values. Evaluated on 0/1
decisions it is the exact parameter count of the shrunk encoder; evaluated on keep
probabilities it is the expected count (every term is a product of independent gates, so
the expectation of the product is the product of the probabilities), which is what the
Lagrangian drives to the target. One formula serves both, and ``spec_parameter_count`` (the
same formula on the sizes of a spec) the shrunk model, so they cannot drift apart.

Never pruned: the hidden size D, the positional convolution, post-LN layer norms, the
encoder LayerNorm, the feature projection's bias, ``masked_spec_embed``.
"""

from __future__ import annotations

import torch

from ..model.spec import EncoderSpec
from .gates import GateValues
from .parts import cost_terms, decide_parts


def parameter_breakdown(spec: EncoderSpec, keep: GateValues) -> dict[str, torch.Tensor]:
    """Parameters per part: "cnn.c", "projection", "attention.L", "ffn.L", and "fixed.*" for
    what no gate removes; a key's first word is its component (``component_totals``)."""
    ref = keep.flat
    terms = cost_terms(spec, keep, lambda part, sizes: part.params(sizes))
    return {name: torch.as_tensor(value, dtype=ref.dtype, device=ref.device) for name, value in terms.items()}


def parameter_count(spec: EncoderSpec, keep: GateValues) -> torch.Tensor:
    """Scalar: exact count for 0/1 decisions, expected count for keep probabilities."""
    return torch.stack(list(parameter_breakdown(spec, keep).values())).sum()


def spec_parameter_count(spec: EncoderSpec) -> int:
    """Parameters of an encoder of ``spec`` (dense or shrunk), from the same formula."""
    return int(round(sum(cost_terms(spec, None, lambda part, sizes: part.params(sizes)).values())))


def dense_count(spec: EncoderSpec, layout) -> int:
    ones = torch.ones(layout.size, dtype=torch.float64)
    return int(round(parameter_count(spec, GateValues(layout, ones)).item()))


def component_totals(parts: dict[str, torch.Tensor]) -> dict[str, int]:
    """Breakdown summed into cnn / projection / attention / ffn / fixed, as integers."""
    totals = {"cnn": 0.0, "projection": 0.0, "attention": 0.0, "ffn": 0.0, "fixed": 0.0}
    for name, value in parts.items():
        totals[name.split(".")[0]] += float(value)
    return {k: int(round(v)) for k, v in totals.items()}


def pruned_spec(spec: EncoderSpec, keep: GateValues) -> EncoderSpec:
    """The architecture of the shrunk encoder that gate values > 0 keep (what ``shrink`` slices
    to): present heads with their kept widths, kept FFN units, kept conv channels."""
    return decide_parts(spec, keep).spec


def kept_structure(spec: EncoderSpec, keep: GateValues) -> dict:
    """What gate values > 0 keep, per layer, in the terms a user reads (JSON-ready)."""
    pruned = pruned_spec(spec, keep)
    layers = []
    for layer in pruned.layers:
        qk_dims, vo_dims = layer.head_widths()
        layers.append(
            {
                "attention": layer.attention,
                "heads": list(layer.heads),
                "qk_dims": list(qk_dims),
                "vo_dims": list(vo_dims),
                "ffn": layer.ffn,
                "ffn_units": layer.ffn_dim,
            }
        )
    return {"conv_channels": pruned.conv_channels, "layers": layers}
