"""The command line in-process (`cli`, `run_captured`) and as a child process (`run_cli`, with
`StderrLines` to wait for what it prints), and the assertion every error test makes."""

from __future__ import annotations

import contextlib
import io
import os
import queue
import subprocess
import sys
import threading
import time

import torch

from speechprune.cli.app import main
from speechprune.prune.config import PruneConfig

# The options of conftest's shared finished runs: a non-default --tolerance that tests find
# recorded, and a high --gate-lr so that 4 steps move the gates (the masks change the outputs).
RUN_OPTIONS = ["--sparsity", "0.6", "--gate-lr", "0.5", "--tolerance", "0.02", "--steps", "4", "--crop-seconds", "1.5",
               "--batch-seconds", "3", "--device", "cpu"]
RUN_STEPS = 4
TINY = ["--steps", "3", "--crop-seconds", "1.5", "--batch-seconds", "3", "--min-seconds", "1", "--device", "cpu"]


def cli(capsys, *args) -> tuple[int, str, str]:
    """Run `speechprune ARGS` in-process: (exit code, stdout, stderr)."""
    capsys.readouterr()  # drop anything printed before
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def run_captured(*args) -> tuple[int, str, str]:
    """Like `cli`, for fixtures that cannot use capsys (rich's stderr console follows sys.stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in args])
    return code, out.getvalue(), err.getvalue()


def lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


def refused(result, code: int, *words: str) -> str:
    """Exit ``code`` with an `error:` line (no traceback, no "unexpected") whose last one names ``words``;
    progress lines may come first (the problem was found after work began)."""
    got, _, err = result
    assert got == code, f"exit {got}, expected {code}: {err}"
    assert "Traceback" not in err and "unexpected" not in err, err
    message = [line for line in err.splitlines() if line.startswith("error: ")][-1]
    for word in words:
        assert word.lower() in message.lower(), f"{word!r} not in {message!r}"
    return message


def assert_clean_error(result, code: int, *words: str, only_line: bool = True) -> str:
    """Exit `code`, nothing on stdout, no traceback, one `error: ...` line naming `words`.

    With only_line the error is all of stderr (the problem was found before any progress line).
    """
    got, out, err = result
    assert got == code, f"exit {got}, expected {code}; stderr:\n{err}"
    assert out == "", f"stdout should be empty on errors, got:\n{out}"
    assert "Traceback" not in err, err
    errors = [line for line in lines(err) if line.startswith("error: ")]
    assert len(errors) == 1, f"expected one error line, got:\n{err}"
    if only_line:
        assert lines(err) == errors, f"stderr should be just the error line, got:\n{err}"
    else:
        assert lines(err)[-1] == errors[0], f"the error should be the last line, got:\n{err}"
    message = errors[0]
    assert "unexpected" not in message, f"a known problem reported as a crash: {message}"
    for word in words:
        assert word.lower() in message.lower(), f"{word!r} not in {message!r}"
    return message


def fast_config(model, data, out, sparsity, **options) -> PruneConfig:
    settings = dict(steps=4, crop_seconds=1.5, batch_seconds=3.0, device="cpu")
    settings.update(options)
    return PruneConfig(model=str(model), sparsity=sparsity, data=str(data), out=str(out), **settings)


def fake_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)


def run_cli(*args, **kwargs) -> subprocess.Popen:
    """`python -m speechprune ARGS` as a child process, its output unbuffered into pipes."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "speechprune", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kwargs)


def hold_lock(out) -> subprocess.Popen:
    """Another process that holds ``out``'s output lock until killed."""
    code = "import sys, time; from speechprune.io.outputs import OutputLock\n" \
           "with OutputLock(sys.argv[1]):\n    print('locked', flush=True); time.sleep(600)"
    process = subprocess.Popen([sys.executable, "-c", code, str(out)], stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "locked"
    return process


def metric_lines(run_dir):
    path = run_dir / "metrics.jsonl"
    return path.read_text().splitlines() if path.exists() else []


class StderrLines:
    """A child's stderr read line by line on a thread, so that a test waits for the line that
    says the child got somewhere (an event) instead of polling files with a deadline."""

    def __init__(self, process: subprocess.Popen):
        self.process = process
        self.seen: list[str] = []
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.process.stderr:
            self._lines.put(line)
        self._lines.put(None)  # end of stream: the child exited

    def wait_for(self, text: str, timeout: float = 120) -> str:
        """The first line from now on that contains ``text``; fails if the child exits or ``timeout`` s pass."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self._lines.get(timeout=max(deadline - time.monotonic(), 0))
            except queue.Empty:
                raise AssertionError(f"no line with {text!r} in {timeout} s; stderr so far:\n{self.text()}") from None
            if line is None:
                raise AssertionError(f"the child exited before printing {text!r}; stderr:\n{self.text()}")
            self.seen.append(line)
            if text in line:
                return line

    def rest(self, timeout: float = 120) -> str:
        """All of stderr once the child has exited (waits up to ``timeout`` s for it)."""
        self.process.wait(timeout=timeout)
        self._reader.join(timeout=timeout)
        while not self._lines.empty():
            line = self._lines.get_nowait()
            if line is not None:
                self.seen.append(line)
        return self.text()

    def text(self) -> str:
        return "".join(self.seen)
