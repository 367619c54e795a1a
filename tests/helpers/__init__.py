"""What several test modules share; no test module imports another.

- `models`: tiny models of every family and style, specs, edge-case gate values, shrunk encoders;
- `commands`: the command line in-process and as a child process, and clean-error assertions;
- `data`: generated inputs (speech, labelled tones, gate scores, cost tables);
- `sliced_count`: an independent reference for the parameter count.

Fixtures (model folders, audio, the finished runs) are in `tests/conftest.py`.
"""
