"""One output layer for every command: human text on a terminal, plain lines in pipelines,
one JSON document on stdout with --json, and nothing but errors with --quiet (no notes, no
warnings, no progress). Progress bars (training phases, and counts such as the audio scan)
are drawn on a terminal only.

Progress, notes and warnings go to stderr; only the result goes to stdout. Colour follows
rich's rules, which honour NO_COLOR. Text that comes from the user (paths, model ids) can hold
square brackets, so nothing printed here is read as rich markup: only our own warning prefix is.
"""

from __future__ import annotations

import sys

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from ..io.atomic import dumps
from ..io.progress import Reporter
from ..method.currencies import CURRENCIES

# (label, metric key prefix) of each budget the progress shows: expected/target sparsity
BUDGET_METRICS = tuple((currency.label, currency.metric_prefix) for currency in CURRENCIES)


class Output:
    def __init__(self, json_mode: bool = False, quiet: bool = False):
        self.json_mode = json_mode
        self.quiet = quiet
        self.err = Console(stderr=True, highlight=False)
        self.out = Console(highlight=False)

    def info(self, text: str) -> None:
        if not self.quiet:
            self.err.print(text, markup=False, soft_wrap=True)

    def warning(self, text: str) -> None:
        if not self.quiet:
            self.err.print(warning_markup(text), soft_wrap=True)

    def result(self, data: dict, human: str) -> None:
        """The command's result: JSON on stdout with --json, else ``human`` on stdout."""
        if self.json_mode:
            sys.stdout.write(dumps(data) + "\n")  # strict JSON: NaN and inf become null
            sys.stdout.flush()
        elif not self.quiet:
            self.out.print(human, markup=False, soft_wrap=True)

    def reporter(self, log_every: int) -> Reporter:
        if self.quiet:
            return QuietReporter(self)
        if self.err.is_terminal:
            return BarReporter(self)
        return LineReporter(self, log_every)


class QuietReporter(Reporter):
    def __init__(self, output: Output):
        self.output = output

    def warning(self, text: str) -> None:
        self.output.warning(text)


class LineReporter(QuietReporter):
    """Pipelines and log files: a plain line every ``log_every`` steps."""

    def __init__(self, output: Output, log_every: int):
        super().__init__(output)
        self.log_every = log_every

    def message(self, text: str) -> None:
        self.output.info(text)

    def start(self, phase: str, total: int, done: int = 0) -> None:
        self.output.info(f"{phase} phase: {total} steps" + (f", resuming after {done}" if done else ""))

    def update(self, step: int, metrics: dict) -> None:
        due = step % self.log_every == 0 or "val_distill" in metrics
        if due:
            self.output.info(format_metrics(metrics))


class BarReporter(QuietReporter):
    """A terminal: one live progress bar with loss, sparsity vs target and ETA per phase, and a
    passing one per count."""

    def __init__(self, output: Output):
        super().__init__(output)
        self.progress: Progress | None = None

    def message(self, text: str) -> None:
        (self.progress.console if self.progress else self.output.err).print(text, markup=False)

    def warning(self, text: str) -> None:
        (self.progress.console if self.progress else self.output.err).print(warning_markup(text))

    def start(self, phase: str, total: int, done: int = 0) -> None:
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[status]}"),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            console=self.output.err,
            transient=False,
        )
        self.progress.start()
        self.task = self.progress.add_task(phase, total=total, completed=done, status="")

    def count(self, task: str, done: int, total: int) -> None:
        """A bar of its own, cleared when the count ends: a scan of a large folder shows it is
        moving, and leaves the screen to the notes that follow. (Pipelines and logs skip
        counts: a line per file would bury the notes.)"""
        if self.progress is None:
            self.progress = Progress(TextColumn("{task.description}", markup=False), BarColumn(), MofNCompleteColumn(),
                                     TimeElapsedColumn(), console=self.output.err, transient=True)
            self.progress.start()
            self.task = self.progress.add_task(task, total=total)
        self.progress.update(self.task, description=task, total=total, completed=done)

    def update(self, step: int, metrics: dict) -> None:
        status = f"loss {metrics['loss']:.4f}"
        for label, prefix in BUDGET_METRICS:
            if f"expected_{prefix}sparsity" in metrics:
                status += f"  {label} {metrics[f'expected_{prefix}sparsity']:.3f}/{metrics[f'target_{prefix}sparsity']:.3f}"
        if metrics.get("val_distill") is not None:
            status += f"  val {metrics['val_distill']:.4f}"
        self.progress.update(self.task, advance=1, status=status)

    def finish(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None


def warning_markup(text: str) -> str:
    """Our coloured prefix, then ``text`` escaped: a path like runs/run[exp1] stays as typed."""
    return f"[yellow]warning:[/yellow] {escape(text)}"


def format_metrics(m: dict) -> str:
    parts = [f"step {m['step']}", f"loss {m['loss']:.4f}", f"distill {m['distill']:.4f}"]
    for label, prefix in BUDGET_METRICS:
        if f"expected_{prefix}sparsity" in m:
            parts.append(f"{label} {m[f'expected_{prefix}sparsity']:.3f}/{m[f'target_{prefix}sparsity']:.3f}")
            parts.append(f"lambda {m[f'{prefix}lambda1']:+.3f},{m[f'{prefix}lambda2']:+.3f}")
    if m.get("val_distill") is not None:
        parts.append(f"val {m['val_distill']:.4f}")
    parts.append(f"{m['audio_seconds_per_second']:.1f} audio-s/s")
    return "  ".join(parts)
