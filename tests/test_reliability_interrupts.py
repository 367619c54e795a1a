"""Ctrl-C during `bench`: the workers stop, no process is left behind, the output lock is released,
nothing is written, exit 130 with one line. Ctrl-C is sent as a terminal sends it, to the whole
process group, once the child says (a stderr line) that it got to the point under test."""

from __future__ import annotations

import os
import select
import signal
from pathlib import Path

from helpers.commands import StderrLines, run_cli

QUIT_SECONDS = 60  # how long the processes of an interrupted bench may take to be gone


def session_processes(session: int) -> set[int]:
    """The processes of the session ``session`` (field 6 of /proc/PID/stat), zombies left out."""
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except (FileNotFoundError, ProcessLookupError):
                continue
            if int(fields[3]) == session and fields[0] != "Z":
                found.add(int(entry.name))
    return found


def wait_gone(pids: set[int], timeout: float) -> set[int]:
    """Wait, on each process's pidfd (an event, not a polling loop), for ``pids`` to exit; the ones still running."""
    running = set()
    for pid in pids:
        try:
            fd = os.pidfd_open(pid)
        except ProcessLookupError:
            continue
        try:
            if not select.select([fd], [], [], timeout)[0]:
                running.add(pid)
        finally:
            os.close(fd)
    return running


def interrupt_after(args: list, line: str) -> tuple[StderrLines, str, set[int]]:
    """Run `speechprune ARGS` in a session of its own, Ctrl-C it once it prints ``line``: (its
    stderr lines, its stdout, the processes of the session then)."""
    # Ctrl-C's default action, as a terminal's shell gives it: a pytest-xdist worker ignores SIGINT, and
    # a Python started with SIGINT ignored keeps ignoring it (no KeyboardInterrupt)
    process = run_cli(*map(str, args), start_new_session=True,
                      preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    stderr = StderrLines(process)
    try:
        stderr.wait_for(line)
        started = session_processes(process.pid)
        os.killpg(process.pid, signal.SIGINT)
        stderr.rest(timeout=QUIT_SECONDS)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    return stderr, process.stdout.read(), started


def assert_interrupted(stderr: StderrLines, stdout: str, started: set[int]) -> None:
    assert stderr.process.returncode == 130, stderr.text()
    assert "Traceback" not in stderr.text(), stderr.text()
    assert stderr.text().splitlines()[-1] == "interrupted", stderr.text()
    assert stdout == ""  # no partial --json report
    session = stderr.process.pid
    assert not wait_gone(started | session_processes(session), QUIT_SECONDS), "processes left behind"


def test_ctrl_c_while_bench_loads_its_workers_stops_them_all(model_dir):
    baseline, model = model_dir("wav2vec2"), model_dir("hubert")
    stderr, stdout, started = interrupt_after(
        ["bench", model, "--baseline", baseline, "--device", "cpu", "--seconds", "1", "--threads", "1", "--json"],
        f"loading {model}")  # the baseline's worker is loaded, the model's starting
    assert_interrupted(stderr, stdout, started)
    assert len(started) >= 2  # the bench and at least the baseline's worker (and the fork server)


def test_ctrl_c_while_timing_stops_the_workers(model_dir):
    baseline, model = model_dir("wav2vec2"), model_dir("hubert")
    stderr, stdout, started = interrupt_after(
        ["bench", model, "--baseline", baseline, "--device", "cpu", "--seconds", "0.5,60", "--repeat", "1",
         "--warmup", "0", "--min-time", "0", "--threads", "1", "--json"],
        "0.5 s x 1 float32: 1 rounds")  # the first setting timed; the 60 s one (seconds a call) starts
    assert_interrupted(stderr, stdout, started)


def test_ctrl_c_while_measuring_a_cost_table_writes_nothing_and_releases_the_lock(model_dir, tmp_path):
    from speechprune.io.outputs import OutputLock

    table = tmp_path / "cost.json"
    stderr, stdout, started = interrupt_after(
        ["bench", model_dir("wav2vec2"), "--cost-model", table, "--device", "cpu", "--seconds", "1", "--threads", "1",
         "--json"], "timing")
    assert_interrupted(stderr, stdout, started)
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no table, no temporary, no lock file
    with OutputLock(table, "--cost-model"):  # nobody holds it
        pass
