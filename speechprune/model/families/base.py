"""What a model family contributes: how its Hugging Face config maps to an ``EncoderSpec``
and how its checkpoint keys map to the encoder's."""

from __future__ import annotations

from ..spec import EncoderSpec, LayerSpec


class Family:
    """One supported family of Hugging Face speech encoders.

    A new family (Data2VecAudio, UniSpeech, ...) is a subclass that names its config
    ``model_type``, its base model class and whatever its config spells differently.
    """

    name: str  # our name, also EncoderSpec.family
    model_type: str  # config.model_type in transformers
    base_class: str  # the `...Model` class in transformers
    task_prefix: str  # attribute holding the base model inside `...For*` classes

    def spec_from_config(self, config) -> EncoderSpec:
        hidden = config.hidden_size
        heads = config.num_attention_heads
        head_dim = hidden // heads
        layer = dict(heads=list(range(heads)), qk_dim=head_dim, vo_dim=head_dim, ffn_dim=config.intermediate_size)
        return EncoderSpec(
            family=self.name,
            hidden_size=hidden,
            num_heads=heads,
            head_dim=head_dim,
            conv_channels=list(config.conv_dim),
            conv_kernels=list(config.conv_kernel),
            conv_strides=list(config.conv_stride),
            conv_bias=bool(config.conv_bias),
            conv_norm=config.feat_extract_norm,
            conv_act=config.feat_extract_activation,
            hidden_act=config.hidden_act,
            layer_norm_eps=config.layer_norm_eps,
            stable_layer_norm=bool(config.do_stable_layer_norm),
            feat_proj_layer_norm=self.feat_proj_layer_norm(config),
            pos_conv_kernel=config.num_conv_pos_embeddings,
            pos_conv_groups=config.num_conv_pos_embedding_groups,
            pos_conv_batch_norm=self.pos_conv_batch_norm(config),
            masked_spec_embed=config.mask_time_prob > 0.0 or config.mask_feature_prob > 0.0,
            layers=[LayerSpec(**layer) for _ in range(config.num_hidden_layers)],
            **self.extra_spec(config),
        )

    def feat_proj_layer_norm(self, config) -> bool:
        return True

    def pos_conv_batch_norm(self, config) -> bool:
        return False

    def extra_spec(self, config) -> dict:
        return {}

    def unsupported_options(self, config) -> list[str]:
        """Config settings the encoder does not implement, as `name=value` strings."""
        found = []
        if getattr(config, "add_adapter", False):
            found.append("add_adapter=True")
        if getattr(config, "adapter_attn_dim", None) is not None:
            found.append(f"adapter_attn_dim={config.adapter_attn_dim}")
        if config.feat_extract_norm not in ("group", "layer"):
            found.append(f"feat_extract_norm={config.feat_extract_norm!r}")
        if config.hidden_size % config.num_attention_heads:
            found.append("hidden_size not divisible by num_attention_heads")
        return found

    # Key renames between the transformers `...Model` state dict and the encoder's.
    renames: dict[str, str] = {}

    def to_encoder_keys(self, state: dict) -> dict:
        return {self.renames.get(k, k): v for k, v in state.items()}

    def to_hf_keys(self, state: dict) -> dict:
        back = {v: k for k, v in self.renames.items()}
        return {back.get(k, k): v for k, v in state.items()}
