"""The ``export-onnx`` job: a stock or shrunk model (folder or hub id) to one ONNX file, checked
with ONNX Runtime (``deploy.onnx.export_onnx``). Every option, the output and the model's config
are checked before any weights load; the file is written under its lock, like every output."""

from __future__ import annotations

from pathlib import Path

import torch

from ..deploy.onnx import ONNX_FILE, export_onnx, require_onnx
from ..errors import UsageError
from ..folders.target import load_target, read_target
from ..io.outputs import OutputLock, check_output, check_replaceable, output_path
from ..model.loading import local_folder


def export_model(source: str, out: str | None = None, *, hidden_states: bool = False, overwrite: bool = False,
                 reporter=None) -> dict:
    """Export ``source`` to ``out`` (default: the folder's model.onnx); returns what was written."""
    folder = local_folder(source)  # None: a hub id
    if out is None and (folder is None or not folder.is_dir()):
        raise UsageError(f"{source} is not a local folder: pass --out FILE for the ONNX file")
    path = output_path(out if out is not None else folder / ONNX_FILE, "--out")  # a link: its target
    if path.is_dir():
        raise UsageError(f"--out {path} is a folder; give a file name")
    if not path.parent.is_dir():
        raise UsageError(f"--out {path}: folder {path.parent} does not exist")
    if path.exists() and not overwrite:
        raise UsageError(f"{path} exists; pass --overwrite to replace it")
    check_output(path, "--out", _model_files(folder, path), folder=False, kind="onnx")
    target = read_target(source)
    if target.kind == "run":
        raise UsageError(f"{source} is a prune run: shrink it first (speechprune shrink RUN --onnx)")
    require_onnx()
    with OutputLock(path):
        check_replaceable(path, "--out", folder=False, kind="onnx")  # again, with the lock held
        model, _, _ = load_target(target, torch.device("cpu"))
        if reporter is not None:
            reporter.message(f"exporting {source} and checking it with ONNX Runtime")
        written = export_onnx(model, path, attention_mask=target.attention_mask, sampling_rate=target.sampling_rate,
                              hidden_states=hidden_states)
    return {"model": source, "kind": target.kind, "family": target.spec.family, **written}


def _model_files(folder: Path | None, onnx_file: Path) -> dict[str, Path]:
    """The local files export-onnx reads (all of a model folder's but the ONNX file it may replace)."""
    if folder is None:
        return {}
    if not folder.is_dir():
        return {"MODEL": folder}
    return {f"MODEL's {path.name}": path for path in folder.iterdir() if path.resolve() != onnx_file.resolve()}
