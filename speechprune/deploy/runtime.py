"""Running a model in ONNX Runtime for ``bench`` and ``eval`` (``--runtime onnxruntime``): which
graph runs (``deployed_session``: the folder's own model.onnx while it passes the export's check,
else a fresh export), how it is fed (``feeds``), and ``OnnxEncoder``, a session with hidden
states given the encoder's face, so ``eval``'s features and hidden-state comparisons run on it
unchanged; and ``part_call``, one call of a part of the encoder in ONNX Runtime, which
``bench --cost-model --runtime onnxruntime`` times."""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from ..errors import UsageError
from ..folders.target import Target
from ..model.encoder import EncoderModules, EncoderOutput
from ..model.loading import local_folder
from .onnx import ONNX_FILE, RELATIVE_LIMIT, export_fixed, export_onnx, recheck
from .quantize import quantize_onnx
from .sessions import io_names, open_export, quantized_scheme, session

RUNTIMES = ("torch", "onnxruntime")  # --runtime of bench and eval


def check_runtime(runtime: str, device: torch.device, option: str = "--runtime") -> None:
    """Refuse an unknown ``option`` (``--runtime``), or ONNX Runtime off the CPU (before any weights
    load; the packages are checked by ``onnx.require_onnx``)."""
    if runtime not in RUNTIMES:
        raise UsageError(f"{option} must be one of {', '.join(RUNTIMES)}, got {runtime!r}")
    if runtime != "torch" and device.type != "cpu":
        raise UsageError(f"{option} {runtime} runs on the CPU (CPUExecutionProvider); use --device cpu")


def deployed_session(target: Target, model: nn.Module, *, threads: int | None, quantize: str | None = None,
                     hidden_states: bool = False, attention_mask: bool = False,
                     calibration: Sequence[np.ndarray] | None = None) -> tuple[object, str]:
    """(an ONNX Runtime session of ``target``'s model, a note saying which graph it runs).

    ``model`` holds the weights (float32, CPU; ``folders.target.load_target``). The session runs the
    folder's own model.onnx (``shrink --onnx``, ``export-onnx``) when that file is float32 (not a
    graph of ``export-onnx --quantize``), has what is asked (the ``hidden_states`` output; the
    ``attention_mask`` input) and passes the export's check against the weights now: what is
    deployed is what runs, and no export is paid for. Otherwise it runs a fresh export, checked
    the same way, that takes ``attention_mask`` only when asked. A folder file that is not an
    export of speechprune's raises ExportError. ``quantize`` ("int8", "int8-static") quantizes
    the graph (``quantize.quantize_onnx``; a static scheme on the ranges of ``calibration``, clips
    as the model takes them). The session holds the graph in memory, so the temporary files are
    gone when this returns.
    """
    folder = local_folder(target.source) if target.kind != "run" else None  # None: a hub id, or a run
    notes = []
    with tempfile.TemporaryDirectory(prefix="speechprune-onnx-") as scratch:
        path = None
        if folder is not None and (folder / ONNX_FILE).is_file():
            path, note = _checked_folder_file(folder / ONNX_FILE, target, model, hidden_states, attention_mask)
            notes.append(note)
        if path is None:
            path = Path(scratch) / ONNX_FILE
            export_onnx(model, path, attention_mask=attention_mask, sampling_rate=target.sampling_rate,
                        hidden_states=hidden_states)
            notes.append("ONNX Runtime (CPU) of an ONNX export checked against torch")
        return session(_quantized(path, quantize, Path(scratch), calibration), threads), "; ".join(notes)


def encoder_call(model: nn.Module, input_values: torch.Tensor, *, threads: int | None, quantize: str | None,
                 sampling_rate: int) -> Callable[[], object]:
    """One call of a whole encoder (an ``EncoderModules`` model, float32, CPU) on ``input_values``
    (B, T) as a deployment runs it: ``export-onnx``'s graph (a dynamic length, checked against
    torch), quantized by ``quantize``, in a session of ``threads`` threads. Cost tables time their
    whole encoders so: a fixed-shape graph of the same encoder runs faster (Base in ORT int8 on
    the AMD EPYC: 529 against 649 ms), and predictions must be of what is deployed."""
    with tempfile.TemporaryDirectory(prefix="speechprune-onnx-") as scratch:
        path = Path(scratch) / ONNX_FILE
        export_onnx(model, path, attention_mask=False, sampling_rate=sampling_rate)
        runner = session(_quantized(path, quantize, Path(scratch)), threads)
    fed = {"input_values": input_values.detach().float().cpu().numpy()}
    return lambda: runner.run(None, fed)


def _quantized(path: Path, quantize: str | None, scratch: Path,
               calibration: Sequence[np.ndarray] | None = None) -> Path:
    """``path``'s graph quantized by ``quantize`` (``quantize.quantize_onnx``, calibrated on
    ``calibration`` for a static scheme) into ``scratch`` (never beside ``path``, which may be a
    model folder's own export); ``path`` for None."""
    if not quantize:
        return path
    quantized = scratch / f"{quantize}.onnx"
    quantize_onnx(path, quantized, quantize, calibration)
    return quantized


def part_call(module: nn.Module, inputs: tuple, *, threads: int | None,
              quantize: str | None = None) -> Callable[[], object]:
    """One call of ``module`` on ``inputs`` (tensors; None for an optional input not given) as an
    ONNX Runtime session runs it: exported at these fixed shapes (``onnx.export_fixed``), quantized
    by ``quantize`` ("int8": ``quantize.quantize_onnx``, as ``deployed_session`` quantizes models),
    in a session of ``threads`` threads. The session holds the graph, so the files are gone when
    this returns."""
    with tempfile.TemporaryDirectory(prefix="speechprune-part-") as scratch:
        path = Path(scratch) / "part.onnx"
        names = export_fixed(module, inputs, path)
        runner = session(_quantized(path, quantize, Path(scratch)), threads)
    given = dict(zip(names, (x.detach().float().cpu().numpy() for x in inputs if x is not None)))
    fed = {name: given[name] for name in io_names(runner)[0]}  # the inputs the graph reads
    return lambda: runner.run(None, fed)


def _checked_folder_file(saved: Path, target: Target, model: nn.Module, hidden_states: bool,
                         attention_mask: bool) -> tuple[Path | None, str]:
    """(``saved`` when it has what is asked and matches the weights now, else None; the note that says so)."""
    runner = open_export(saved)
    scheme = quantized_scheme(runner)
    if scheme is not None:  # export-onnx --quantize, put where the float32 graph belongs: never taken for it
        return None, (f"the folder's {ONNX_FILE} is quantized ({scheme}, export-onnx --quantize), not the float32 "
                      "export, so a fresh export ran instead")
    names, outputs = io_names(runner)
    asked = (("the hidden_states output", hidden_states, "hidden_states" in outputs),
             ("the attention_mask input", attention_mask, "attention_mask" in names))
    lacks = [what for what, wanted, present in asked if wanted and not present]
    if lacks:
        return None, f"the folder's {ONNX_FILE} lacks {' and '.join(lacks)}, so a fresh export ran instead"
    error = recheck(runner, model, target.sampling_rate)
    if error < RELATIVE_LIMIT:
        return saved, f"ONNX Runtime (CPU) of the folder's {ONNX_FILE}, checked against torch"
    return None, f"the folder's {ONNX_FILE} differs from its weights by {error:.1e} relative, so a fresh export ran instead"


def feeds(input_values: torch.Tensor, attention_mask: torch.Tensor | None, takes_mask: bool) -> dict:
    """The inputs of an exported graph: input_values (B, T), and for a graph that takes it the
    padding mask (ones when none is given: no padding)."""
    fed = {"input_values": input_values.detach().float().cpu().numpy()}  # (B, T)
    if takes_mask:
        mask = torch.ones(input_values.shape, dtype=torch.long) if attention_mask is None else attention_mask
        fed["attention_mask"] = mask.detach().long().cpu().numpy()
    return fed


class OnnxEncoder:
    """An ORT session of a graph with hidden states, with the face of an encoder that
    ``eval.features`` and ``model.compare`` use: ``spec``, ``encode`` and ``frame_mask``.

    The batches are fed as they come: a graph that takes ``attention_mask`` gets the batch's
    (ones when none is given), so padded batches give what torch gives on them.
    """

    frame_mask = EncoderModules.frame_mask  # reads only self.spec

    def __init__(self, runner, spec):
        names, outputs = io_names(runner)
        if "hidden_states" not in outputs:
            raise ValueError("the ONNX graph has no hidden_states output (export it with hidden_states=True)")
        self.runner, self.spec = runner, spec
        self.takes_mask = "attention_mask" in names

    def encode(self, input_values: torch.Tensor, attention_mask: torch.Tensor | None = None,
               masks=None) -> EncoderOutput:
        if masks is not None:
            raise ValueError("an ONNX graph takes no masks: shrink the prune run first")
        fed = feeds(input_values, attention_mask, self.takes_mask)
        last, states = self.runner.run(["last_hidden_state", "hidden_states"], fed)  # (B, T', D), (L + 1, B, T', D)
        frames = None if attention_mask is None else self.frame_mask(attention_mask.cpu(), last.shape[1])
        return EncoderOutput(torch.from_numpy(last), tuple(torch.from_numpy(states).unbind(0)), frames)
