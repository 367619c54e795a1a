"""The `speechprune` command line: a thin layer over the library (the library never imports it)."""
