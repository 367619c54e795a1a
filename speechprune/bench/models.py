"""What each model under test is (config files only, through ``folders.target``), and its
weights loaded as users deploy it: the stock ``transformers`` model for a stock folder or hub
id, ``speechprune.load`` for a shrunk folder, a prune run's dense encoder with its masks, or
an ONNX Runtime session of a checked export; quantized after loading when asked."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..checks import check_fits_in_memory, check_long_enough
from ..deploy.runtime import deployed_session, feeds
from ..deploy.quantize import describe as describe_quantization, quantize
from ..errors import UsageError
from ..folders.target import Target, load_target, read_target
from ..method.accounting import spec_parameter_count
from ..model.loading import from_pretrained
from ..model.memory import FLOAT_BYTES


@dataclass
class BenchModel:
    label: str
    target: Target  # what its config files say: kind ("stock" | "shrunk" | "run"), spec, sampling rate
    note: str = ""
    module: torch.nn.Module | None = None  # holds the weights; its parts have transformers' names
    forward: Callable | None = None  # input_values (B, T) -> output
    params: int = 0
    file_bytes: int | None = None
    quantize: str | None = None  # scheme applied after loading
    runtime: str = "torch"
    calibration: list[np.ndarray] | None = None  # clips a static scheme calibrates on (``deploy.calibration``)

    source = property(lambda self: self.target.source)
    kind = property(lambda self: self.target.kind)
    spec = property(lambda self: self.target.spec)  # the architecture as computed (for a run: the dense one)
    sampling_rate = property(lambda self: self.target.sampling_rate)


def describe(source: str) -> BenchModel:
    """What ``source`` is, without loading weights (``folders.target``), under its label."""
    folder = Path(source).expanduser()
    return BenchModel(folder.name if folder.exists() else source, read_target(source))


def check_inputs(models: list[BenchModel], baseline: BenchModel | None, seconds: list[float],
                 batches: list[int] = (1,)) -> None:
    for model in models:
        if baseline is not None and model.sampling_rate != baseline.sampling_rate:
            raise UsageError(
                f"{model.source} takes {model.sampling_rate} Hz audio but --baseline {baseline.source} takes "
                f"{baseline.sampling_rate} Hz; compare models of the same sampling rate"
            )
        for s in seconds:
            check_long_enough(s, "--seconds", model.source, model.spec, model.sampling_rate)
    weight_bytes = sum(FLOAT_BYTES * spec_parameter_count(model.spec) for model in models)  # all loaded at once
    for model in models:
        for s in seconds:
            check_fits_in_memory(model.source, model.spec, model.sampling_rate, length=("--seconds", s),
                                 count=("--batch", max(batches)), training=False, weight_bytes=weight_bytes,
                                 what="one call")


def load(model: BenchModel, device: torch.device, threads: int | None = None) -> None:
    """Load the weights of ``model`` (float32, eval mode) onto ``device``, quantized if asked; fills
    module/forward/params/file_bytes."""
    if model.kind == "stock":
        _load_stock(model)
    else:
        _load_ours(model, device)
    model.module = model.module.to(device=device, dtype=torch.float32).eval()
    model.forward = model.forward or model.module
    model.params = sum(p.numel() for p in model.module.parameters())  # quantized layers hide theirs: count first
    if model.runtime == "onnxruntime":
        _load_onnxruntime(model, threads)
    elif model.quantize:  # in place: a prune run's forward holds the module
        quantize(model.module, model.quantize, inplace=True)
        model.note = f"{model.note}; {describe_quantization(model.quantize)}"


def _load_onnxruntime(model: BenchModel, threads: int | None) -> None:
    """Time an ORT session of ``model`` (``deploy.runtime.deployed_session``): the folder's own
    model.onnx when it passes the export's check against the weights now, else a fresh export
    (checked the same way); quantized if asked.

    Every model is timed on input_values; a graph that also takes a padding mask gets one of ones
    (no padding).
    """
    encoder, _, _ = load_target(model.target, torch.device("cpu"))
    runner, note = deployed_session(model.target, encoder, threads=threads, quantize=model.quantize,
                                    calibration=model.calibration)
    model.note = f"{model.note}; {note}"
    takes_mask = "attention_mask" in [node.name for node in runner.get_inputs()]
    model.forward = lambda waveforms: runner.run(["last_hidden_state"], feeds(waveforms, None, takes_mask))[0]
    if model.quantize:
        model.note += f"; {describe_quantization(model.quantize, 'onnxruntime')}"
    if model.calibration:
        model.note += f" ({len(model.calibration)} clips)"


def _load_stock(model: BenchModel) -> None:
    info = model.target.info
    model.module, _ = from_pretrained(info)
    model.note = f"stock {info.family.base_class}" + (f" (encoder of a {info.architecture})" if info.takes_part else "")
    model.file_bytes = _weights_bytes(Path(info.path) if info.path else _hub_snapshot(info.source))


def _load_ours(model: BenchModel, device: torch.device) -> None:
    """A shrunk folder as ``speechprune.load`` gives it, or a prune run's dense encoder with its masks."""
    model.module, masks, snap = load_target(model.target, device)
    if snap is None:
        model.note = "shrunk by speechprune"
        model.file_bytes = _weights_bytes(Path(model.source))
        return
    encoder = model.module
    model.forward = lambda waveforms: encoder(waveforms, None, masks)
    state = "finished" if snap.finished else f"checkpoint at step {snap.step}"
    model.note = (f"prune run ({state}), timed in its masked form: it computes as much as the dense model; "
                  "`speechprune shrink` it for the speedup")


def _weights_bytes(folder: Path | None) -> int | None:
    """Size of the weights in ``folder``: its .safetensors files, else its .bin files."""
    if folder is None or not folder.is_dir():
        return None
    files = sorted(folder.glob("*.safetensors")) or sorted(folder.glob("*.bin"))
    return sum(f.stat().st_size for f in files) or None


def _hub_snapshot(repo: str) -> Path | None:
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(repo, allow_patterns=["*.safetensors", "*.bin"], local_files_only=True))
    except Exception:  # not in the local cache: the file size is simply not reported
        return None
