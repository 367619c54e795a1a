"""`speechprune analyze`: per-head statistics (``heads``), what a prune run kept, similarity to a
teacher, and the optional matplotlib figure (``plot``). ``job.analyze`` is the entry point."""
