"""Files and audio, knowing nothing of models: atomic writes (``atomic``), one writer per output
and outputs apart from inputs (``outputs``), progress reporting (``progress``), finding and
reading audio (``audio``), batches, the validation split and training crops (``batches``),
generated speech-like audio (``synth``), and typed JSON records of one format (``versioned``)."""
