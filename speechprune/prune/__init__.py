"""`speechprune prune`: gated distillation of an encoder down to its budgets. ``job.prune`` is
the entry point; ``config`` holds the options, ``demo`` the offline demo's inputs."""
