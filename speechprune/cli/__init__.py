"""The `speechprune` command line: a thin layer over the library (the library never imports it)."""

invocation: list[str] = []  # the arguments of the running command, for provenance (model cards)
