"""ONNX export of an encoder, checked with ONNX Runtime before it is kept, and ORT sessions.

The export goes through ``torch.export`` (``torch.onnx.export(dynamo=True)``) with dynamic
batch and time axes: the legacy TorchScript exporter records one trace and gives wrong results
at other lengths. The graph takes ``input_values`` (B, T) float32 and, for models fed padding
masks, ``attention_mask`` (B, T) int64, and returns ``last_hidden_state`` (B, T', D) (and, if
asked, ``hidden_states`` (L + 1, B, T', D)). Before the file is kept, ONNX Runtime runs it at
another batch size and length than the export example, and its outputs must match torch's
within ``RELATIVE_LIMIT``; otherwise nothing is written. onnx, onnxscript and onnxruntime are
the optional ``speechprune[onnx]`` extra.

``deployed_session`` is how ``bench`` and ``eval`` run a model in ONNX Runtime (the folder's own
model.onnx while it passes that check, else a fresh export), and ``OnnxEncoder`` gives a session
with hidden states the encoder's face, so ``eval``'s features and hidden-state comparisons run
on it unchanged.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..errors import ExportError, UsageError
from ..folders.target import Target, load_target, read_target
from ..io.atomic import write_with
from ..io.batches import normalized
from ..io.outputs import OutputLock, check_output, expand
from ..io.synth import speechlike
from ..model.encoder import EncoderModules, EncoderOutput

ONNX_FILE = "model.onnx"  # its name in a shrunk model folder
RELATIVE_LIMIT = 1e-4  # max |onnx - torch| / max |torch| over every output, float32
EXAMPLE = (2, 1.0)  # batch, seconds of the input the graph is traced with
CHECK = (3, 1.37)  # another batch and length: dynamic axes must really be dynamic
PACKAGES = ("onnx", "onnxscript", "onnxruntime")
RUNTIMES = ("torch", "onnxruntime")  # --runtime of bench and eval


def require_onnx() -> None:
    """One clear error (exit 1) when the optional ONNX packages are missing."""
    missing = [name for name in PACKAGES if importlib.util.find_spec(name) is None]
    if missing:
        raise ExportError(f"ONNX export and runtime need {', '.join(missing)}: pip install 'speechprune[onnx]'")


def check_runtime(runtime: str, device: torch.device) -> None:
    """Refuse an unknown ``--runtime``, or ONNX Runtime off the CPU (before any weights load; the
    packages are checked by ``require_onnx``)."""
    if runtime not in RUNTIMES:
        raise UsageError(f"--runtime must be one of {', '.join(RUNTIMES)}, got {runtime!r}")
    if runtime != "torch" and device.type != "cpu":
        raise UsageError(f"--runtime {runtime} runs on the CPU (CPUExecutionProvider); use --device cpu")


class _Graph(nn.Module):
    """What is exported: the encoder's forward as plain tensors in, plain tensors out."""

    def __init__(self, model: nn.Module, hidden_states: bool):
        super().__init__()
        self.model = model
        self.hidden_states = hidden_states

    def forward(self, input_values: torch.Tensor, attention_mask: torch.Tensor | None = None):
        out = self.model.encode(input_values, attention_mask)
        if self.hidden_states:
            return out.last_hidden_state, torch.stack(out.hidden_states)  # (B, T', D), (L + 1, B, T', D)
        return out.last_hidden_state


def _inputs(batch: int, seconds: float, sampling_rate: int, attention_mask: bool, seed: int) -> dict[str, torch.Tensor]:
    """Generated speech (B, T), normalised; the last row padded after half its length when masks are used."""
    rng = np.random.default_rng(seed)
    samples = round(seconds * sampling_rate)
    audio = np.stack([speechlike(samples / sampling_rate, sampling_rate, rng)[:samples] for _ in range(batch)])
    audio = normalized(audio)
    inputs = {"input_values": torch.from_numpy(audio.astype(np.float32))}
    if attention_mask:
        mask = torch.ones(batch, samples, dtype=torch.long)
        mask[-1, samples // 2 :] = 0
        inputs["input_values"][-1, samples // 2 :] = 0
        inputs["attention_mask"] = mask
    return inputs


def export_onnx(model: nn.Module, path: str | Path, *, attention_mask: bool, sampling_rate: int,
                hidden_states: bool = False) -> dict:
    """Export ``model`` (an ``EncoderModules`` model, float32, CPU) to ``path``, checked against torch.

    Returns what was written: inputs, outputs, and the measured max relative error.
    """
    require_onnx()
    from torch.export import Dim

    path = Path(path)
    graph = _Graph(model.eval(), hidden_states)
    example = _inputs(*EXAMPLE, sampling_rate, attention_mask, seed=0)
    names = list(example)
    outputs = ["last_hidden_state"] + (["hidden_states"] if hidden_states else [])
    dynamic = {name: {0: Dim.DYNAMIC, 1: Dim.DYNAMIC} for name in names}
    with _quiet(), torch.no_grad():
        program = torch.onnx.export(graph, (), kwargs=example, dynamo=True, input_names=names, output_names=outputs,
                                    dynamic_shapes=dynamic, verbose=False)
    measured = {}

    def save_checked(tmp: Path) -> None:
        program.save(str(tmp), external_data=False)  # one file (models up to 2 GB)
        measured["error"] = check_onnx(session(tmp, threads=None), graph,
                                       _inputs(*CHECK, sampling_rate, attention_mask, seed=1))
        if not measured["error"] < RELATIVE_LIMIT:
            raise ExportError(f"the ONNX export differs from the torch model by {measured['error']:.1e} relative on "
                              f"another input length (limit {RELATIVE_LIMIT:.0e}); nothing was written")

    write_with(path, save_checked)
    return {"path": str(path), "inputs": names, "outputs": outputs, "max_relative_error": measured["error"],
            "bytes": path.stat().st_size}


def recheck_onnx(path: str | Path, model: nn.Module, *, sampling_rate: int) -> float:
    """An ONNX file written before (``shrink --onnx``, ``export-onnx``) checked against ``model``'s
    weights now, as an export is: the max relative error on a fresh input. A file left over from
    other weights fails the check; one of another graph raises ExportError."""
    return _recheck(_open_export(path), model, sampling_rate)


def _open_export(path: str | Path):
    """An ORT session (default threads) of a file that must be an export of speechprune's, else ExportError."""
    try:
        runner = session(path, threads=None)
    except Exception as error:  # ORT raises its own classes for unreadable files and graphs
        raise ExportError(f"{path} cannot be loaded by ONNX Runtime ({str(error).splitlines()[0]}); write it again "
                          "with speechprune export-onnx MODEL --overwrite") from error
    names, outputs = _names(runner)
    if names not in (["input_values"], ["input_values", "attention_mask"]) or outputs[0] != "last_hidden_state":
        raise ExportError(f"{path} takes {names} and returns {outputs}: not an export of speechprune's; "
                          "write it again with speechprune export-onnx MODEL --overwrite")
    return runner


def _names(runner) -> tuple[list[str], list[str]]:
    """(input names, output names) of an ORT session."""
    return [node.name for node in runner.get_inputs()], [node.name for node in runner.get_outputs()]


def _recheck(runner, model: nn.Module, sampling_rate: int) -> float:
    names, outputs = _names(runner)
    graph = _Graph(model.eval(), hidden_states="hidden_states" in outputs)
    inputs = _inputs(*CHECK, sampling_rate, attention_mask="attention_mask" in names, seed=2)
    return check_onnx(runner, graph, inputs)


def check_onnx(runner, graph: nn.Module, inputs: dict[str, torch.Tensor]) -> float:
    """Max relative error of ``runner``'s (an ORT session's) outputs against torch's, over every output."""
    with torch.no_grad():
        expected = graph(**inputs)
    expected = expected if isinstance(expected, tuple) else (expected,)
    got = runner.run(None, {name: value.numpy() for name, value in inputs.items()})
    if any(g.shape != tuple(e.shape) for g, e in zip(got, expected)):  # a graph of another architecture
        return float("inf")
    return max(float(np.abs(g - e.numpy()).max() / max(np.abs(e.numpy()).max(), 1e-12)) for g, e in zip(got, expected))


def session(path: str | Path, threads: int | None):
    """An ONNX Runtime CPU session of ``path``, with all graph optimisations and no spinning.

    ORT's worker threads spin for a while after each call by default. ``bench`` times several
    models in one process, one after another: the spinning threads of one session then hold the
    cores the next model needs (on 2 cores, a second session took 82 instead of 49 ms, and the
    torch baseline 136 instead of 111 ms). Alone, spinning saved about 2 %.
    """
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3  # errors only
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    if threads is not None:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def deployed_session(target: Target, model: nn.Module, *, threads: int | None, quantize: str | None = None,
                     hidden_states: bool = False, attention_mask: bool = False) -> tuple[object, str]:
    """(an ONNX Runtime session of ``target``'s model, a note saying which graph it runs).

    ``model`` holds the weights (float32, CPU; ``folders.target.load_target``). The session runs the
    folder's own model.onnx (``shrink --onnx``, ``export-onnx``) when that file has what is asked
    (the ``hidden_states`` output; the ``attention_mask`` input) and passes the export's check
    against the weights now: what is deployed is what runs, and no export is paid for. Otherwise
    it runs a fresh export, checked the same way, that takes ``attention_mask`` only when asked.
    A folder file that is not an export of speechprune's raises ExportError. ``quantize``
    ("int8") quantizes the graph (``quantize_onnx``). The session holds the graph in memory, so
    the temporary files are gone when this returns.
    """
    import tempfile

    saved = Path(target.source).expanduser() / ONNX_FILE
    notes = []
    with tempfile.TemporaryDirectory(prefix="speechprune-onnx-") as folder:
        path = None
        if target.kind != "run" and saved.is_file():
            runner = _open_export(saved)
            names, outputs = _names(runner)
            asked = (("the hidden_states output", hidden_states, "hidden_states" in outputs),
                     ("the attention_mask input", attention_mask, "attention_mask" in names))
            lacks = [what for what, wanted, present in asked if wanted and not present]
            if lacks:
                notes.append(f"the folder's {ONNX_FILE} lacks {' and '.join(lacks)}, so a fresh export ran instead")
            else:
                error = _recheck(runner, model, target.sampling_rate)
                if error < RELATIVE_LIMIT:
                    path = saved
                    notes.append(f"ONNX Runtime (CPU) of the folder's {ONNX_FILE}, checked against torch")
                else:
                    notes.append(f"the folder's {ONNX_FILE} differs from its weights by {error:.1e} relative, "
                                 "so a fresh export ran instead")
            del runner
        if path is None:
            path = Path(folder) / ONNX_FILE
            export_onnx(model, path, attention_mask=attention_mask, sampling_rate=target.sampling_rate,
                        hidden_states=hidden_states)
            notes.append("ONNX Runtime (CPU) of an ONNX export checked against torch")
        if quantize:
            quantize_onnx(path, Path(folder) / f"{quantize}.onnx")
            path = Path(folder) / f"{quantize}.onnx"
        return session(path, threads), "; ".join(notes)


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
        names, outputs = _names(runner)
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


def quantize_onnx(source: str | Path, target: str | Path) -> None:
    """ORT dynamic int8 quantization of the MatMul nodes of ``source`` (the Linear layers), to ``target``."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with _quiet():
        quantize_dynamic(str(source), str(target), op_types_to_quantize=["MatMul"], weight_type=QuantType.QInt8)


@contextlib.contextmanager
def _quiet():
    """Keep stderr ours: the exporter's and the quantizer's notes (decompositions, a missing
    torchvision, "consider pre-processing") are warnings and log records, not problems."""
    loggers = [logging.getLogger(name) for name in ("", "torch.onnx", "torch.export", "onnxscript")]
    levels = [logger.level for logger in loggers]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for logger in loggers:
            logger.setLevel(logging.ERROR)
        try:
            yield
        finally:
            for logger, level in zip(loggers, levels):
                logger.setLevel(level)


def _model_files(source: str, onnx_file: Path) -> dict[str, Path]:
    """The files of a local model folder that export-onnx reads (all but the ONNX file it may replace)."""
    folder = expand(source)
    if not folder.is_dir():
        return {"MODEL": folder}
    return {f"MODEL's {path.name}": path for path in folder.iterdir() if path.resolve() != onnx_file.resolve()}


def export_model(source: str, out: str | None = None, *, hidden_states: bool = False, overwrite: bool = False,
                 reporter=None) -> dict:
    """The ``export-onnx`` job: a stock or shrunk model (folder or hub id) to one checked ONNX file.

    Every option and the model's config are checked before any weights load.
    """
    if out is None and not expand(source).is_dir():
        raise UsageError(f"{source} is not a local folder: pass --out FILE for the ONNX file")
    path = expand(out) if out is not None else expand(source) / ONNX_FILE
    if path.is_dir():
        raise UsageError(f"--out {path} is a folder; give a file name")
    if not path.parent.is_dir():
        raise UsageError(f"--out {path}: folder {path.parent} does not exist")
    if path.exists() and not overwrite:
        raise UsageError(f"{path} exists; pass --overwrite to replace it")
    check_output(path, "--out", _model_files(source, path), folder=False, kind="onnx")
    target = read_target(source)
    if target.kind == "run":
        raise UsageError(f"{source} is a prune run: shrink it first (speechprune shrink RUN --onnx)")
    require_onnx()
    with OutputLock(path):
        model, _, _ = load_target(target, torch.device("cpu"))
        if reporter is not None:
            reporter.message(f"exporting {source} and checking it with ONNX Runtime")
        written = export_onnx(model, path, attention_mask=target.attention_mask, sampling_rate=target.sampling_rate,
                              hidden_states=hidden_states)
    return {"model": source, "kind": target.kind, "family": target.spec.family, **written}
