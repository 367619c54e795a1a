from .base import Family


class Hubert(Family):
    name = "hubert"
    model_type = "hubert"
    base_class = "HubertModel"
    task_prefix = "hubert"

    def feat_proj_layer_norm(self, config) -> bool:
        return bool(config.feat_proj_layer_norm)

    def pos_conv_batch_norm(self, config) -> bool:
        return bool(getattr(config, "conv_pos_batch_norm", False))
