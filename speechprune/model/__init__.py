"""What an encoder is, apart from any pruning: its architecture without weights (``spec``), the
masks of its prunable structures (``masks``), its modules (``attention``, ``layers``,
``encoder``), the supported families and how their checkpoints map onto it (``families``),
stock checkpoints found and loaded (``loading``), the transformers face of a shrunk model
(``hf_model``), where and in what precision it runs (``device``), and how close two encoders'
hidden states are (``compare``). Imports nothing of speechprune but ``errors``."""
