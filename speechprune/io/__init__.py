"""Files and audio, knowing nothing of models: atomic writes (``atomic``), one writer per output
and outputs apart from inputs (``outputs``), progress reporting (``progress``), finding and
reading audio (``audio``), batches, the validation split and training crops (``batches``), and
generated speech-like audio (``synth``)."""
