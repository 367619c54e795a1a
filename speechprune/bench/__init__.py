"""`speechprune bench`: latency, throughput, memory and speedup of encoders. ``job.bench`` is the
entry point."""
