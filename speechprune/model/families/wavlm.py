from .base import Family


class WavLM(Family):
    name = "wavlm"
    model_type = "wavlm"
    base_class = "WavLMModel"
    task_prefix = "wavlm"
    # The bias table lives in layer 0 in transformers; the encoder keeps it beside the layers
    # because it serves every layer, also when layer 0 loses its attention block.
    renames = {"encoder.layers.0.attention.rel_attn_embed.weight": "encoder.rel_pos.rel_attn_embed.weight"}

    def extra_spec(self, config) -> dict:
        return {"num_buckets": config.num_buckets, "max_distance": config.max_bucket_distance}
