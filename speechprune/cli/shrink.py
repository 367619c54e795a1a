"""`speechprune shrink`: a run folder in, a physically smaller model folder out."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Optional

import typer

from ..model.device import DTYPES
from . import invocation
from .options import JsonOption, QuietOption, overwrite_option
from .output import Output

OverwriteOption = overwrite_option("an existing --out folder")


def command(
    run: str = typer.Argument(..., help="Run folder written by speechprune prune (finished, or its latest checkpoint)."),
    out: Optional[str] = typer.Option(None, help="Model folder to write. [default: models/<run name>]"),
    dtype: str = typer.Option("float32", help=f"Precision of the saved weights: {'|'.join(DTYPES)}."),
    data: Optional[str] = typer.Option(None, help="Audio to measure fidelity to the dense teacher on (folder or manifest)."),
    fidelity_seconds: float = typer.Option(20.0, help="At most this much audio for the fidelity measurement."),
    overwrite: OverwriteOption = False,
    onnx: bool = typer.Option(False, "--onnx", help="Also write model.onnx, checked with ONNX Runtime (needs speechprune[onnx])."),
    json_output: JsonOption = False,
    quiet: QuietOption = False,
) -> None:
    """Materialise a pruning run as a physically smaller model that transformers can load.

    \b
    Example: speechprune shrink runs/w2v2-72 --out models/w2v2-72 --data /data/LibriSpeech/dev-clean --onnx
    """
    from ..shrink.job import shrink_run

    output = Output(json_mode=json_output, quiet=quiet)
    out = out if out is not None else str(Path("models") / Path(run.rstrip("/")).name)  # "" is refused
    report = shrink_run(
        run,
        out,
        dtype=dtype,
        data=data,
        fidelity_seconds=fidelity_seconds,
        overwrite=overwrite,
        onnx=onnx,
        command="speechprune " + " ".join(shlex.quote(a) for a in invocation),
        reporter=output.reporter(log_every=1),
    )
    output.result(report, summary_line(report))


def summary_line(report: dict) -> str:
    line = (
        f"{report['params_dense'] / 1e6:.2f}M -> {report['params'] / 1e6:.2f}M parameters "
        f"({report['file_bytes'] / 1e6:.1f} MB {report['dtype']}), saved in {report['model_dir']}"
    )
    if report["onnx"]:
        line += f"; model.onnx within {report['onnx']['max_relative_error']:.0e} of torch"
    if report["fidelity_cosine"]:
        line += "; cosine to teacher " + ", ".join(f"L{k} {v:.3f}" for k, v in report["fidelity_cosine"].items())
    return line
