"""The ``export-onnx`` job: a stock or shrunk model (folder or hub id) to one ONNX file, checked
with ONNX Runtime: float32 (``deploy.onnx.export_onnx``), or quantized as bench and eval quantize
it (``--quantize``: ``deploy.quantized_export.export_quantized``). Every option, the output, the
model's config and the calibration audio are checked before any weights load; the file is
written under its lock, like every output."""

from __future__ import annotations

from pathlib import Path

import torch

from ..checks import check_seed
from ..deploy.calibration import read_calibration
from ..deploy.onnx import ONNX_FILE, export_onnx, require_onnx
from ..deploy.quantize import STATIC, check_scheme
from ..deploy.quantized_export import export_quantized, quantized_file
from ..errors import UsageError
from ..folders.target import load_target, read_target
from ..io.audio import scan_reported
from ..io.outputs import OutputLock, check_output, check_replaceable, output_path
from ..io.progress import Reporter
from ..model.loading import local_folder


def export_model(source: str, out: str | None = None, *, hidden_states: bool = False, overwrite: bool = False,
                 quantize: str | None = None, data: str | None = None, seed: int = 0,
                 reporter: Reporter | None = None) -> dict:
    """Export ``source`` to ``out`` (default: the folder's model.onnx, or model.SCHEME.onnx when
    quantized by ``quantize``, a static scheme calibrated on clips of ``data`` chosen by ``seed``);
    returns what was written."""
    reporter = reporter or Reporter()
    _check_quantization(quantize, data, seed)
    folder = local_folder(source)  # None: a hub id
    if out is None and (folder is None or not folder.is_dir()):
        raise UsageError(f"{source} is not a local folder: pass --out FILE for the ONNX file")
    default = folder / (quantized_file(quantize) if quantize else ONNX_FILE) if out is None else None
    path = output_path(out if out is not None else default, "--out")  # a link: its target
    if path.is_dir():
        raise UsageError(f"--out {path} is a folder; give a file name")
    if not path.parent.is_dir():
        raise UsageError(f"--out {path}: folder {path.parent} does not exist")
    if quantize and folder is not None and folder.is_dir() and path.resolve() == (folder / ONNX_FILE).resolve():
        raise UsageError(f"--out {path} is the folder's float32 graph, which bench and eval --runtime onnxruntime "
                         f"run and recheck: write the {quantize} graph beside it (the default, "
                         f"{folder / quantized_file(quantize)})")
    if path.exists() and not overwrite:
        raise UsageError(f"{path} exists; pass --overwrite to replace it")
    check_output(path, "--out", _model_files(folder, path) | {"--data": data}, folder=False, kind="onnx")
    target = read_target(source)
    if target.kind == "run":
        raise UsageError(f"{source} is a prune run: shrink it first (speechprune shrink RUN --onnx)")
    require_onnx()
    calibration = None
    if quantize in STATIC:  # the audio scanned and read before any weights load, as bench reads it
        calibration = read_calibration(scan_reported(data, reporter), sampling_rate=target.sampling_rate,
                                       normalize=target.normalize, seed=seed)
    with OutputLock(path):
        check_replaceable(path, "--out", folder=False, kind="onnx")  # again, with the lock held
        model, _, _ = load_target(target, torch.device("cpu"))
        options = dict(attention_mask=target.attention_mask, sampling_rate=target.sampling_rate,
                       hidden_states=hidden_states)
        if quantize:
            reporter.message(f"exporting {source}, quantizing it ({quantize}) and checking it with ONNX Runtime")
            written = export_quantized(model, path, quantize, calibration, **options)
        else:
            reporter.message(f"exporting {source} and checking it with ONNX Runtime")
            written = {**export_onnx(model, path, **options), "quantize": None, "quantization": None, "cosine": None}
    described = None if calibration is None else {"data": data, "seed": seed, "clips": len(calibration)}
    return {"model": source, "kind": target.kind, "family": target.spec.family, **written, "calibration": described}


def _check_quantization(quantize: str | None, data: str | None, seed: int) -> None:
    """bench's checks of ``--quantize``, ``--data`` and ``--seed`` (in ONNX Runtime, on the CPU)."""
    check_scheme(quantize, torch.device("cpu"), "--quantize", runtime="onnxruntime", data=data)
    if data is not None and quantize not in STATIC:
        raise UsageError("--data is the audio --quantize int8-static calibrates on; drop it, or add "
                         "--quantize int8-static")
    check_seed(seed)


def _model_files(folder: Path | None, onnx_file: Path) -> dict[str, Path]:
    """The local files export-onnx reads (all of a model folder's but the ONNX file it may replace)."""
    if folder is None:
        return {}
    if not folder.is_dir():
        return {"MODEL": folder}
    return {f"MODEL's {path.name}": path for path in folder.iterdir() if path.resolve() != onnx_file.resolve()}
