"""The transformers face of a shrunk encoder: a config and a PreTrainedModel.

`speechprune shrink` writes this file, together with the encoder's modules (``spec``,
``masks``, ``attention``, ``layers``, ``encoder``), into the model folder as one
self-contained modeling file, so that
``AutoModel.from_pretrained(folder, trust_remote_code=True)`` works with only torch and
transformers installed. ``speechprune.load(folder)`` uses the same classes from the package,
without remote code.
"""

import torch
from transformers import PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import BaseModelOutput

from .encoder import EncoderModules
from .spec import EncoderSpec


class SpeechpruneConfig(PretrainedConfig):
    """``encoder`` holds every per-layer size (an ``EncoderSpec`` as a dict)."""

    model_type = "speechprune"

    def __init__(self, encoder: dict | None = None, **kwargs):
        self.encoder = encoder or {}
        super().__init__(**kwargs)


class SpeechpruneModel(EncoderModules, PreTrainedModel):
    """A pruned wav2vec2 / HuBERT / WavLM encoder with per-layer sizes.

    Takes ``input_values`` (B, T) and an optional ``attention_mask`` like the stock
    ``...Model`` classes and returns ``last_hidden_state`` and, with
    ``output_hidden_states=True``, the input of the first layer and every layer's output.
    """

    config_class = SpeechpruneConfig
    main_input_name = "input_values"
    base_model_prefix = "speechprune"
    # read by transformers (not dead): attention always runs through SDPA, and without this flag
    # from_pretrained(..., attn_implementation="sdpa") would be refused
    _supports_sdpa = True

    def __init__(self, config: SpeechpruneConfig):
        PreTrainedModel.__init__(self, config)
        self.build_encoder(EncoderSpec.from_dict(config.encoder))
        self.post_init()

    def _init_weights(self, module):
        pass  # every weight comes from the checkpoint

    def forward(
        self,
        input_values: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ):
        if output_hidden_states is None:
            output_hidden_states = self.config.output_hidden_states
        out = self.encode(input_values, attention_mask)
        hidden_states = out.hidden_states if output_hidden_states else None
        if return_dict is False:
            return (out.last_hidden_state,) + ((hidden_states,) if hidden_states is not None else ())
        return BaseModelOutput(last_hidden_state=out.last_hidden_state, hidden_states=hidden_states)
