"""`speechprune bench`: latency, throughput, memory and speedup of encoders. ``job.bench`` is the
entry point; ``models`` reads and loads the models under test, ``timing`` takes the time, and
``cost_model`` measures a cost table (``--cost-model``) for ``method.latency``."""
