"""The options that several commands share, defined once so that they read and behave the same
everywhere: ``--json``, ``--quiet``, ``--device`` and ``--seed`` in every command that has them;
MODEL and ``--out`` of the commands that report on one model (analyze, eval); ``--teacher`` and
``--overwrite``, with their help in the words of each command."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

JsonOption = Annotated[bool, typer.Option("--json", help="Print the result as one JSON document on stdout.")]
QuietOption = Annotated[bool, typer.Option("--quiet", "-q", help="Print nothing but errors (and the result with --json).")]

# One device rule for every command that runs a model (model.device.resolve_device): shrink and
# export-onnx have no --device, since their exactness checks compare float32 results on the CPU.
DeviceOption = Annotated[str, typer.Option(
    "--device", help="auto|cpu|cuda|cuda:N|mps. auto: a CUDA GPU, else Apple's MPS, else the CPU; "
                     "the CPU when an option runs only there (--quantize, --runtime onnxruntime).")]

# analyze and eval: any of the three kinds folders/target.py reads, and the report's JSON file
TargetArgument = Annotated[str, typer.Argument(
    help="Stock model (hub id or folder), shrunk folder, or prune run folder.")]
ReportOption = Annotated[Optional[str], typer.Option("--out", help="Write the report as JSON to this file.")]


def seed_option(seeds: str):
    """``--seed``, with what it seeds in this command (``seeds``) in its help. A function rather
    than one alias: the same seed means different draws in each command, and the help says which."""
    return Annotated[int, typer.Option("--seed", help=f"Seed of {seeds}.")]


def teacher_option(compared: str):
    """``--teacher``: the dense model a command compares with; ``compared`` (its help) says how."""
    return Annotated[Optional[str], typer.Option("--teacher", help=compared)]


def overwrite_option(replaced: str):
    """``--overwrite``: ``replaced`` says what it replaces in this command (a run, a folder, a file)."""
    return Annotated[bool, typer.Option("--overwrite", help=f"Replace {replaced}.")]
