"""`speechprune prune`: gated distillation of an encoder down to its budgets. ``job.prune`` is
the entry point (checks, then the run); ``config`` holds the options, ``lifecycle`` the run
around its steps (start, resume, checkpoints, signals, the decision), ``step`` one training
step, ``records`` what the run writes about itself (config.json, summary.json),
``distributed`` the torchrun ranks, and ``demo`` the offline demo's inputs."""
