"""`speechprune export-onnx`: a stock or shrunk model to one ONNX file, checked with ONNX Runtime."""

from __future__ import annotations

from typing import Optional

import typer

from .options import JsonOption, QuietOption, overwrite_option
from .output import Output

OverwriteOption = overwrite_option("an existing file")


def command(
    model: str = typer.Argument(..., help="Stock model (folder or hub id) or shrunk folder."),
    out: Optional[str] = typer.Option(None, help="ONNX file to write. [default: MODEL/model.onnx for a folder]"),
    hidden_states: bool = typer.Option(False, "--hidden-states", help="Also output every hidden state, (L + 1, B, T', D)."),
    overwrite: OverwriteOption = False,
    json_output: JsonOption = False,
    quiet: QuietOption = False,
) -> None:
    """Export a model to ONNX (dynamic batch and time), kept only if ONNX Runtime matches torch.

    \b
    Example: speechprune export-onnx models/w2v2-72 --out w2v2-72.onnx
    """
    from ..export_onnx.job import export_model

    output = Output(json_mode=json_output, quiet=quiet)
    report = export_model(model, out, hidden_states=hidden_states, overwrite=overwrite,
                          reporter=output.reporter(log_every=1))
    output.result(report, f"wrote {report['path']} ({report['bytes'] / 1e6:.1f} MB; inputs {', '.join(report['inputs'])}; "
                          f"max relative error vs torch {report['max_relative_error']:.1e})")
