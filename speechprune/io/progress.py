"""How long-running library calls report progress, without knowing who is listening.

The library calls a ``Reporter``; the CLI passes one that draws a progress bar on a
terminal or prints plain lines in a pipeline. The default stays silent.
"""

from __future__ import annotations


class Reporter:
    """Silent base: override what you want to show."""

    def message(self, text: str) -> None:
        """A one-line note (what was loaded, what was skipped, where things were saved)."""

    def warning(self, text: str) -> None:
        """Something the user should know about that does not stop the run."""

    def start(self, phase: str, total: int, done: int = 0) -> None:
        """A phase of ``total`` steps begins (``done`` already finished, when resuming)."""

    def update(self, step: int, metrics: dict) -> None:
        """Called after every step with that step's metrics."""

    def finish(self) -> None:
        """The current phase ended (or was interrupted)."""
