"""An independent reference for the parameter count: slice every tensor of the dense
encoder by the kept indices, the way a shrunk model stores them, and count elements."""

from __future__ import annotations

import torch

from speechprune.method.gates import GateValues
from speechprune.model.encoder import Encoder


def _kept(values: GateValues, kind: str, index: int, size: int) -> torch.Tensor:
    v = values.get(kind, index)
    return torch.arange(size) if v is None else torch.nonzero(v.flatten() > 0).flatten()


def _on(values: GateValues, kind: str, index: int) -> bool:
    v = values.get(kind, index)
    return v is None or bool(v > 0)


class _Taken:
    """Elements counted so far, and the names of the tensors they came from."""

    def __init__(self, state: dict):
        self.state, self.names, self.total = state, set(), 0

    def __call__(self, name: str, tensor: torch.Tensor) -> None:
        self.names.add(name)
        self.total += tensor.numel()


def _take_cnn(take: _Taken, spec, values: GateValues) -> None:
    """The CNN's kept channels (rows, and columns of the next layer) and the projection's columns."""
    state = take.state
    channels = [_kept(values, "conv", c, n) for c, n in enumerate(spec.conv_channels)]
    for c in range(len(spec.conv_channels)):
        prefix = f"feature_extractor.conv_layers.{c}."
        w = state[prefix + "conv.weight"][channels[c]]
        if c > 0:
            w = w[:, channels[c - 1]]
        take(prefix + "conv.weight", w)
        for name in ("conv.bias", "layer_norm.weight", "layer_norm.bias"):
            if prefix + name in state:
                take(prefix + name, state[prefix + name][channels[c]])
    last = channels[-1]
    take("feature_projection.projection.weight", state["feature_projection.projection.weight"][:, last])
    for name in ("feature_projection.layer_norm.weight", "feature_projection.layer_norm.bias"):
        if name in state:
            take(name, state[name][last])


def _take_attention(take: _Taken, spec, values: GateValues, l: int, layer) -> torch.Tensor:
    """Layer ``l``'s attention rows and columns of the kept dims; returns which heads are present."""
    state, d, a = take.state, spec.hidden_size, f"encoder.layers.{l}.attention."
    heads = len(layer.heads)
    mha = _on(values, "mha", l)
    head_on = torch.zeros(heads, dtype=torch.bool)
    head_on[_kept(values, "head", l, heads)] = True
    qk = torch.zeros(heads * layer.qk_dim, dtype=torch.bool)
    qk[_kept(values, "qk", l, heads * layer.qk_dim)] = True
    vo = torch.zeros(heads * layer.vo_dim, dtype=torch.bool)
    vo[_kept(values, "vo", l, heads * layer.vo_dim)] = True
    qk, vo = qk.view(heads, -1), vo.view(heads, -1)
    kept_head = head_on & mha
    present = kept_head & vo.any(-1)
    qk_rows = torch.nonzero((present[:, None] & qk).flatten()).flatten()
    vo_rows = torch.nonzero((kept_head[:, None] & vo).flatten()).flatten()
    for proj in ("q_proj", "k_proj"):
        take(a + proj + ".weight", state[a + proj + ".weight"][qk_rows])
        take(a + proj + ".bias", state[a + proj + ".bias"][qk_rows])
    take(a + "v_proj.weight", state[a + "v_proj.weight"][vo_rows])
    take(a + "v_proj.bias", state[a + "v_proj.bias"][vo_rows])
    take(a + "out_proj.weight", state[a + "out_proj.weight"][:, vo_rows])
    take(a + "out_proj.bias", state[a + "out_proj.bias"][: d if mha else 0])
    if a + "gru_rel_pos_const" in state:
        take(a + "gru_rel_pos_const", state[a + "gru_rel_pos_const"][:, present])
        for name in ("gru_rel_pos_linear.weight", "gru_rel_pos_linear.bias"):
            take(a + name, state[a + name][: (8 if mha else 0)])
    return present


def _take_ffn(take: _Taken, spec, values: GateValues, l: int, layer) -> None:
    """Layer ``l``'s kept FFN units, and its pre-LN norms with the blocks they belong to."""
    state, d, prefix = take.state, spec.hidden_size, f"encoder.layers.{l}."
    ffn = _on(values, "ffn", l)
    units = _kept(values, "int", l, layer.ffn_dim) if ffn else torch.zeros(0, dtype=torch.long)
    f = prefix + "feed_forward."
    take(f + "intermediate_dense.weight", state[f + "intermediate_dense.weight"][units])
    take(f + "intermediate_dense.bias", state[f + "intermediate_dense.bias"][units])
    take(f + "output_dense.weight", state[f + "output_dense.weight"][:, units])
    take(f + "output_dense.bias", state[f + "output_dense.bias"][: d if ffn else 0])
    if spec.stable_layer_norm:  # pre-LN norms belong to their block
        for norm, on in (("layer_norm", _on(values, "mha", l)), ("final_layer_norm", ffn)):
            for name in (".weight", ".bias"):
                take(prefix + norm + name, state[prefix + norm + name][: d if on else 0])


def sliced_parameter_count(encoder: Encoder, values: GateValues) -> int:
    spec = encoder.spec
    state = {k: v for k, v in encoder.state_dict().items() if "running_" not in k and "num_batches" not in k}
    take = _Taken(state)
    _take_cnn(take, spec, values)
    present_anywhere = torch.zeros(spec.num_heads, dtype=torch.bool)
    for l, layer in enumerate(spec.layers):
        present_anywhere |= _take_attention(take, spec, values, l, layer)
        _take_ffn(take, spec, values, l, layer)
    if "encoder.rel_pos.rel_attn_embed.weight" in state:
        name = "encoder.rel_pos.rel_attn_embed.weight"
        take(name, state[name][:, present_anywhere])
    for name, tensor in state.items():  # never pruned
        if name not in take.names:
            take(name, tensor)
    return take.total
