"""One process per model: ``bench`` times every model, the baseline too, in a worker process of
its own, so that the models never share a process (allocator, caches, thread pools, the memory
another model left behind) with each other or with the reference.

The parent (``Workers``) starts the workers one after the other; each loads its model once
(``models.load``). Then, for every setting, each worker prepares its input (``WorkerModel.prepare``),
and in every round the parent asks each worker in turn, in the order of the models, to time one
call. Only one worker computes at a time: the others wait on their pipe. A worker answers with
the seconds of its own call (``timing.timed_call``), so the messages between the processes are
not timed.

Messages: the parent sends ``(command, *arguments)`` (a method name of ``WorkerModel``), the worker
answers ``("ok", value)`` or ``("error", exception)``; an error is raised again in the parent as
it was raised (a ``SpeechpruneError`` keeps its one-line message). A worker that dies (killed, out
of memory, a crash in native code) closes its pipe, and the parent raises one line naming the
model and the signal.

Workers are forked from a fresh server process that has imported only this module
(``forkserver``; ``spawn`` where there is none), never from the parent, whose thread pools a fork
would copy half-initialised.
"""

from __future__ import annotations

import multiprocessing
import os
import pickle
import signal
import time
from contextlib import contextmanager

import torch

from ..errors import ModelError
from ..io.progress import Reporter
from ..model.device import DTYPES
from .allocator import steady_allocator
from .models import BenchModel, describe, load
from .timing import device_sync, part_times, peak_memory, timed_call

_STOP_SECONDS = 10  # how long a worker may take to exit before it is killed


class WorkerModel:
    """One model as its worker process holds it: loaded once, then prepared for each setting
    (dtype, compiled or not, input) and timed one call at a time."""

    def __init__(self, source: str, quantize: str | None, runtime: str, device: str, threads: int,
                 calibration: list | None = None):
        steady_allocator()
        torch.set_num_threads(threads)
        self.model = describe(source)
        self.model.quantize, self.model.runtime, self.model.calibration = quantize, runtime, calibration
        self.device = torch.device(device)
        load(self.model, self.device, threads)  # outside inference mode, as users load models
        self.sync = device_sync(self.device)
        self.dtype = "float32"
        self.run = None  # one call of the prepared setting

    def loaded(self) -> dict:
        """What loading found out: the fields of ``BenchModel`` that the parent reports."""
        return {"params": self.model.params, "file_bytes": self.model.file_bytes, "note": self.model.note}

    def prepare(self, seconds: float, batch: int, dtype: str, compile_mode: str | None, seed: int) -> None:
        """Make ``run`` one call on ``batch`` generated inputs of ``seconds`` in ``dtype``, compiled with
        ``compile_mode`` unless it is None."""
        if dtype != self.dtype:  # in place: weight values do not matter for timing
            self.model.module.to(DTYPES[dtype])
            self.dtype = dtype
        samples = round(seconds * self.model.sampling_rate)
        generator = torch.Generator().manual_seed(seed)
        waveforms = torch.randn(batch, samples, generator=generator).to(self.device, DTYPES[dtype])  # (B, T)
        forward = self.model.forward
        if compile_mode is not None:
            torch._dynamo.reset()  # code compiled for earlier settings would count against the recompile limit
            forward = torch.compile(forward, mode=compile_mode)
        self.run = lambda: forward(waveforms)

    def time(self) -> float:
        """Seconds of one call (the device synchronised on both ends)."""
        return timed_call(self.run, time.perf_counter, self.sync)

    def memory(self) -> int | None:
        return peak_memory(self.run, self.device)

    def breakdown(self, rounds: int) -> dict[str, float]:
        return part_times(self.model.module, self.run, rounds=rounds, clock=time.perf_counter, sync=self.sync)


def _serve(connection, source: str, quantize: str | None, runtime: str, device: str, threads: int,
           calibration: list | None) -> None:
    """The worker process: load and answer with ``WorkerModel.loaded``, then serve commands until ``("quit",)`` or
    until the parent is gone (its end of the pipe closes)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's: it stops the workers
    os.dup2(2, 1)  # whatever is printed goes to stderr, never into the parent's --json on stdout
    try:
        try:
            served = WorkerModel(source, quantize, runtime, device, threads, calibration)
        except BaseException as error:
            connection.send(("error", _portable(error)))
            return
        connection.send(("ok", served.loaded()))
        while True:
            command, *arguments = connection.recv()
            if command == "quit":
                return
            try:
                with torch.inference_mode():
                    answer = ("ok", getattr(served, command)(*arguments))
            except BaseException as error:
                answer = ("error", _portable(error))
            connection.send(answer)
    except (EOFError, BrokenPipeError, ConnectionResetError):
        return  # the parent is gone (Ctrl-C, an error): nobody to answer


def _portable(error: BaseException) -> BaseException:
    """``error`` if it survives pickling (to be raised again in the parent), else its type and text."""
    try:
        return pickle.loads(pickle.dumps(error))
    except Exception:
        return RuntimeError(f"{type(error).__name__}: {error}")


def _context():
    methods = multiprocessing.get_all_start_methods()
    context = multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")
    if context.get_start_method() == "forkserver":
        context.set_forkserver_preload([__name__])  # torch is imported once, by the server
    return context


class Worker:
    """The parent's handle on one model's worker process."""

    def __init__(self, model: BenchModel, device: torch.device, threads: int, context):
        self.model = model
        self.connection, child = context.Pipe()
        self.process = context.Process(target=_serve, args=(child, model.source, model.quantize, model.runtime,
                                                            str(device), threads, model.calibration))  # not daemonic: torch.compile starts processes
        self.process.start()
        child.close()  # the worker's end: once the worker exits, recv here sees the pipe closed

    @property
    def pid(self) -> int:
        return self.process.pid

    def ask(self, command: str, *arguments):
        """Send ``command`` to the worker and return its answer (an error it raised is raised here)."""
        try:
            self.connection.send((command, *arguments))
        except (BrokenPipeError, ConnectionResetError):
            raise self._died() from None
        return self._answer()

    def _answer(self):
        try:
            status, value = self.connection.recv()
        except (EOFError, ConnectionResetError):
            raise self._died() from None
        if status == "error":
            raise value
        return value

    def wait_loaded(self) -> None:
        """Wait for the worker to load its model, and copy what loading found into the parent's model."""
        for name, field in self._answer().items():
            setattr(self.model, name, field)

    def _died(self) -> ModelError:
        self.process.join(_STOP_SECONDS)
        code = self.process.exitcode
        if code is not None and code < 0:
            how = f"was killed by {signal.Signals(-code).name}" + (" (out of memory?)" if -code == signal.SIGKILL else "")
        else:
            how = f"exited with code {code}" if code is not None else "stopped answering"
        return ModelError(f"the process timing {self.model.label} {how}; rerun bench, or bench {self.model.source} "
                          "alone to see its error")

    def stop(self) -> None:
        try:
            self.connection.send(("quit",))
        except (BrokenPipeError, ConnectionResetError, OSError):
            pass
        self.process.join(_STOP_SECONDS)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()
        self.connection.close()


@contextmanager
def _ctrl_c_deferred():
    """Ctrl-C (SIGINT) held back until the block ends, then raised as usual."""
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


class Workers:
    """``with Workers(models, device, threads, reporter) as workers:`` one worker per model, in the
    order of ``models``, each with its model loaded; all stopped on exit, also on errors."""

    def __init__(self, models: list[BenchModel], device: torch.device, threads: int, reporter: Reporter):
        self.models, self.device, self.threads, self.reporter = models, device, threads, reporter
        self.workers: list[Worker] = []

    def __enter__(self) -> list[Worker]:
        context = _context()
        try:
            for model in self.models:  # one at a time: loading is the heaviest thing they do
                self.reporter.message(f"loading {model.source}")
                with _ctrl_c_deferred():  # a worker started is a worker listed, to be stopped
                    worker = Worker(model, self.device, self.threads, context)
                    self.workers.append(worker)
                worker.wait_loaded()
        except BaseException:
            self.__exit__()
            raise
        return self.workers

    def __exit__(self, *exc) -> None:
        for worker in self.workers:
            worker.stop()
