"""`speechprune eval`: SUPERB-style probes of a frozen encoder on labelled audio. ``job.evaluate``
is the entry point; ``features`` computes the frozen features, ``probe`` fits the probes."""
