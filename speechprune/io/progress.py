"""How long-running library calls report progress, without knowing who is listening.

The library calls a ``Reporter``; the CLI passes one that draws a progress bar on a
terminal or prints plain lines in a pipeline. The default stays silent.

Two kinds of progress: the phases of a run (``start``, ``update`` with the step's metrics,
``finish``), and counts of items that a library function goes through (``count``: files
scanned, ...), which functions that know nothing of reporters take as a ``progress(done,
total)`` callable from ``counting``.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator


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
        """The current phase or count ended (or was interrupted)."""

    def count(self, task: str, done: int, total: int) -> None:
        """``done`` of ``total`` items of ``task`` are through; ``total`` may grow."""

    @contextlib.contextmanager
    def counting(self, task: str) -> Iterator[Callable[[int, int], None]]:
        """``count`` for ``task`` as a ``progress(done, total)`` callable; the count ends with the
        block, also when the block raises (a bar on a terminal must not outlive its task)."""
        try:
            yield functools.partial(self.count, task)
        finally:
            self.finish()
