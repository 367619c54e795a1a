"""The options every command shares, defined once so that they read and behave the same
everywhere: ``--json``, ``--quiet``, ``--device`` and ``--seed``."""

from __future__ import annotations

from typing import Annotated

import typer

JsonOption = Annotated[bool, typer.Option("--json", help="Print the result as one JSON document on stdout.")]
QuietOption = Annotated[bool, typer.Option("--quiet", "-q", help="Print nothing but errors (and the result with --json).")]

# One device rule for every command that runs a model (model.device.resolve_device): shrink and
# export-onnx have no --device, since their exactness checks compare float32 results on the CPU.
DeviceOption = Annotated[str, typer.Option(
    "--device", help="auto|cpu|cuda|cuda:N|mps. auto: a CUDA GPU, else Apple's MPS, else the CPU; "
                     "the CPU when an option runs only there (--quantize, --runtime onnxruntime).")]


def seed_option(seeds: str):
    """``--seed``, with what it seeds in this command (``seeds``) in its help. A function rather
    than one alias: the same seed means different draws in each command, and the help says which."""
    return Annotated[int, typer.Option("--seed", help=f"Seed of {seeds}.")]
