"""`speechprune export-onnx`: a stock or shrunk model to one ONNX file, checked with ONNX Runtime."""

from __future__ import annotations

from typing import Optional

import typer

from .options import JsonOption, QuietOption, overwrite_option, seed_option
from .output import Output

OverwriteOption = overwrite_option("an existing file")
SeedOption = seed_option("the choice of --data's calibration clips")


def command(
    model: str = typer.Argument(..., help="Stock model (folder or hub id) or shrunk folder."),
    out: Optional[str] = typer.Option(None, help="ONNX file to write. [default: MODEL/model.onnx for a folder; "
                                                 "MODEL/model.SCHEME.onnx with --quantize]"),
    hidden_states: bool = typer.Option(False, "--hidden-states", help="Also output every hidden state, (L + 1, B, T', D)."),
    quantize: Optional[str] = typer.Option(None, help="Write the graph quantized as bench --runtime onnxruntime runs "
                                                      "it: int8 (dynamic, MatMul nodes); int8-static (with --data: "
                                                      "the convolutions too, calibrated on audio)."),
    data: Optional[str] = typer.Option(None, help="Audio (folder or manifest) that --quantize int8-static calibrates "
                                                  "on (16 clips chosen by --seed)."),
    seed: SeedOption = 0,
    overwrite: OverwriteOption = False,
    json_output: JsonOption = False,
    quiet: QuietOption = False,
) -> None:
    """Export a model to ONNX (dynamic batch and time), kept only if ONNX Runtime matches torch
    (a --quantize graph: to its cosine floor).

    \b
    Example: speechprune export-onnx models/w2v2-72 --out w2v2-72.onnx
    Example: speechprune export-onnx models/w2v2-72 --quantize int8-static --data audio/
    """
    from ..export_onnx.job import export_model

    output = Output(json_mode=json_output, quiet=quiet)
    report = export_model(model, out, hidden_states=hidden_states, overwrite=overwrite, quantize=quantize, data=data,
                          seed=seed, reporter=output.reporter(log_every=1))
    output.result(report, _summary(report))


def _summary(report: dict) -> str:
    """The line that says what was written and how close it is to torch."""
    written = f"wrote {report['path']} ({report['bytes'] / 1e6:.1f} MB; inputs {', '.join(report['inputs'])}; "
    if report["quantize"] is None:
        return written + f"max relative error vs torch {report['max_relative_error']:.1e})"
    cosine = report["cosine"]
    return written + (f"{report['quantize']}: cosine to torch float32 {cosine['mean']:.4f} mean (floor "
                      f"{cosine['floor']}), {cosine['min']:.4f} least frame; max relative error "
                      f"{report['max_relative_error']:.1e})")
