"""ONNX Runtime sessions of a graph file: how every command opens one (CPU, no spinning), the
check that a file is an export of speechprune's, and the scheme a quantized export says it has."""

from __future__ import annotations

from pathlib import Path

from ..errors import ExportError

QUANTIZE_KEY = "speechprune.quantize"  # metadata of a quantized export (export-onnx --quantize): its scheme


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


def io_names(runner) -> tuple[list[str], list[str]]:
    """(input names, output names) of an ORT session."""
    return [node.name for node in runner.get_inputs()], [node.name for node in runner.get_outputs()]


def open_export(path: str | Path):
    """An ORT session (default threads) of a file that must be an export of speechprune's, else ExportError."""
    try:
        runner = session(path, threads=None)
    except Exception as error:  # ORT raises its own classes for unreadable files and graphs
        raise ExportError(f"{path} cannot be loaded by ONNX Runtime ({str(error).splitlines()[0]}); write it again "
                          "with speechprune export-onnx MODEL --overwrite") from error
    names, outputs = io_names(runner)
    if names not in (["input_values"], ["input_values", "attention_mask"]) or outputs[0] != "last_hidden_state":
        raise ExportError(f"{path} takes {names} and returns {outputs}: not an export of speechprune's; "
                          "write it again with speechprune export-onnx MODEL --overwrite")
    return runner


def quantized_scheme(runner) -> str | None:
    """The scheme an ORT session's graph was quantized by (``export-onnx --quantize`` writes it in
    the graph's metadata under ``QUANTIZE_KEY``); None for a float32 export."""
    return runner.get_modelmeta().custom_metadata_map.get(QUANTIZE_KEY)
