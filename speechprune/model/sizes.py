"""Sizes a model config may state, checked before anything is allocated: a damaged or hostile
config.json (1,000,000 layers, a width of 10,000,000) would otherwise cost minutes of
allocation and end in a MemoryError, or be blamed on the weights file.

The bounds are far above any speech encoder (the largest, XLS-R 2B, has 48 layers of width
1920 and 7680 FFN units), so a real model never meets them.
"""

from __future__ import annotations

from ..errors import ModelError

SIZE_LIMITS = {  # key of a transformers config -> its largest sane value
    "num_hidden_layers": 1000,
    "hidden_size": 1 << 16,
    "intermediate_size": 1 << 20,
    "num_attention_heads": 4096,
    "num_conv_pos_embeddings": 4096,
    "num_conv_pos_embedding_groups": 4096,
    "num_buckets": 1 << 16,
    "max_bucket_distance": 1 << 20,
}
LIST_LIMITS = {"conv_dim": 1 << 16, "conv_kernel": 4096, "conv_stride": 4096}  # each entry of these lists
MAX_CONV_LAYERS = 64
MAX_PARAMETERS = 20e9  # 80 GB of float32 weights


def check_config_sizes(raw: dict, where: str) -> None:
    """Refuse a transformers config (``raw``, as read from ``where``) whose sizes are not whole
    numbers, or beyond any speech encoder, naming the key."""
    for key, limit in SIZE_LIMITS.items():
        if key in raw:
            _check(raw[key], key, limit, where)
    for key, limit in LIST_LIMITS.items():
        if key in raw:
            values = raw[key]
            if not isinstance(values, list) or not 0 < len(values) <= MAX_CONV_LAYERS:
                raise ModelError(f"{where}: {key} must be a list of 1 to {MAX_CONV_LAYERS} sizes, got "
                                 f"{_short(values)}; the config looks damaged: re-save or re-download the model")
            for i, value in enumerate(values):
                _check(value, f"{key}[{i}]", limit, where)
    layers, width = raw.get("num_hidden_layers", 12), raw.get("hidden_size", 768)
    check_parameters(layers, width, raw.get("intermediate_size", 3072), where)


def check_encoder_sizes(encoder: dict, where: str) -> None:
    """The same for an ``EncoderSpec`` dict (a shrunk folder's config.json ``encoder``)."""
    for key, limit in (("hidden_size", SIZE_LIMITS["hidden_size"]), ("num_heads", SIZE_LIMITS["num_attention_heads"]),
                       ("head_dim", SIZE_LIMITS["hidden_size"])):
        if key in encoder:
            _check(encoder[key], f"encoder.{key}", limit, where)
    layers = encoder.get("layers", [])
    if not isinstance(layers, list) or len(layers) > SIZE_LIMITS["num_hidden_layers"]:
        raise ModelError(f"{where}: encoder.layers must be a list of at most {SIZE_LIMITS['num_hidden_layers']} "
                         "layers; the config looks damaged: re-save or shrink again")
    ffn = [layer.get("ffn_dim", 0) if isinstance(layer, dict) else 0 for layer in layers]
    for i, units in enumerate(ffn):
        _check(units, f"encoder.layers[{i}].ffn_dim", SIZE_LIMITS["intermediate_size"], where, smallest=0)
    check_parameters(len(layers), encoder.get("hidden_size", 0), max(ffn, default=0), where)


def check_parameters(layers: int, width: int, units: int, where: str) -> None:
    """About 4 d^2 + 2 d f weights per layer: refused beyond MAX_PARAMETERS."""
    estimate = layers * (4 * width * width + 2 * width * units)
    if estimate > MAX_PARAMETERS:
        raise ModelError(f"{where}: {layers} layers of width {width} and {units} FFN units make about "
                         f"{estimate:.1e} parameters, beyond any speech encoder (at most {MAX_PARAMETERS:.0e}); "
                         "the config looks damaged: re-save or re-download the model")


def _check(value, key: str, limit: int, where: str, smallest: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not smallest <= value <= limit:
        raise ModelError(f"{where}: {key} is {_short(value)}, not a whole number from {smallest} to {limit}; "
                         "the config looks damaged: re-save or re-download the model")


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
