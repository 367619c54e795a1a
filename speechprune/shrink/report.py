"""What ``shrink`` reports (``--json`` prints it), typed and versioned; the model folder's
config.json keeps its ``provenance``."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from .. import __version__

REPORT_FORMAT = 1


@dataclass
class ShrinkReport:
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

    def to_dict(self) -> dict:
        return {"format": self.format, **{k: v for k, v in asdict(self).items() if k != "format"}}

    @classmethod
    def from_dict(cls, data: dict) -> "ShrinkReport":
        if data.get("format") != REPORT_FORMAT:
            raise ValueError(f"not a shrink report of format {REPORT_FORMAT}")
        return cls(**{f.name: data[f.name] for f in fields(cls)})
