"""`speechprune eval`: SUPERB-style probes of a frozen encoder on labelled audio (``probe``).
``job.evaluate`` is the entry point."""
