"""What ``shrink`` reports (``--json`` prints it), typed and versioned (``io.versioned``); the
model folder's config.json keeps its ``provenance``."""

from __future__ import annotations

from dataclasses import dataclass

from .. import __version__
from ..io.versioned import Versioned

REPORT_FORMAT = 1


@dataclass
class ShrinkReport(Versioned):
    WHAT = "shrink report"

    model_dir: str
    run_dir: str
    run_step: int
    run_finished: bool
    family: str
    source_model: str
    params_dense: int
    params: int
    sparsity: float
    dtype: str
    max_relative_error_vs_masked: float
    fidelity_cosine: dict[str, float] | None  # per distilled layer, with --data
    stock_config: bool  # also written to stock/
    onnx: dict | None = None  # with --onnx: file, inputs, outputs, max_relative_error
    file_bytes: int | None = None  # of model.safetensors, once written
    format: int = REPORT_FORMAT

    def provenance(self) -> dict:
        """What the model folder's config.json keeps of the report, under "speechprune"."""
        return {"source_model": self.source_model, "params_dense": self.params_dense, "params": self.params,
                "sparsity": self.sparsity, "family": self.family, "version": __version__, "run_step": self.run_step}
