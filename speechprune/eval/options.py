"""What ``eval`` is asked (``EvalOptions``), and the checks it makes before anything is read."""

from __future__ import annotations

from dataclasses import dataclass

from ..checks import MAX_EPOCHS, check_count, check_positive, check_seed
from ..deploy.onnx import require_onnx
from ..deploy.runtime import check_runtime
from ..deploy.quantize import check_scheme
from ..errors import UsageError
from ..io.outputs import check_output
from ..model.device import resolve_device


@dataclass
class EvalOptions:
    model: str
    data: str
    test_data: str | None = None
    test_fraction: float | None = None  # None: 0.25 without test_data
    teacher: str | None = None
    max_per_class: int | None = None  # at most this many clips per label, in data and in test_data
    max_seconds_per_clip: float = 4.0  # longer clips keep their centre
    batch_seconds: float = 32.0  # padded audio per forward pass
    epochs: int = 200
    lr: float = 1e-2
    weight_decay: float = 1e-4
    per_layer: bool = True  # also fit one probe per hidden state alone
    seed: int = 0
    device: str = "auto"  # model.device.resolve_device
    out: str | None = None
    quantize: str | None = None  # probe the model quantized by this scheme (speechprune.deploy.quantize)
    runtime: str = "torch"  # or "onnxruntime": probe a checked ONNX export with hidden states (speechprune.deploy.runtime)


def check_options(options: EvalOptions):
    """Refuse bad options before anything is read or loaded; returns the device."""
    if options.test_data is not None and options.test_fraction is not None:
        raise UsageError("give --test-data or --test-fraction, not both: --test-data is the test set, "
                         "--test-fraction holds out part of --data")
    fraction = options.test_fraction
    if fraction is not None and not (0 < fraction < 1):
        raise UsageError(f"--test-fraction must be between 0 and 1 (exclusive), got {fraction:g}")
    check_positive(options.max_seconds_per_clip, "--max-seconds-per-clip")
    check_positive(options.batch_seconds, "--batch-seconds")
    check_count(options.epochs, "--epochs", most=MAX_EPOCHS)
    check_seed(options.seed)
    if options.max_per_class is not None and options.max_per_class < 1:
        raise UsageError(f"--max-per-class must be at least 1, got {options.max_per_class}")
    if options.out is not None:
        check_output(options.out, "--out", {"MODEL": options.model, "--data": options.data,
                                            "--test-data": options.test_data, "--teacher": options.teacher}, folder=False)
    device = resolve_device(options.device, cpu_only=options.quantize is not None or options.runtime != "torch")
    check_scheme(options.quantize, device, runtime=options.runtime, data=options.data)
    check_runtime(options.runtime, device)
    if options.runtime != "torch":
        require_onnx()
    return device
