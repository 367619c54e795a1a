"""The shrunk model folder: what `speechprune shrink` writes and `speechprune.load` reads.

    MODEL/
      config.json                 model_type "speechprune", every per-layer size, auto_map
      model.safetensors           only the kept parameters
      modeling_speechprune.py     self-contained (torch + transformers) model code
      preprocessor_config.json    sampling rate / normalisation of the source model
      README.md                   model card: source, sparsity, counts, command, fidelity
      model.onnx                  only with `shrink --onnx`: the same model for ONNX Runtime
      stock/                      only when the result fits a stock transformers config

The folder is written to a temporary sibling and renamed into place, so a crash or a full
disk never leaves a half-written model behind.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Callable

import torch

from .. import __version__
from .. import model as model_package
from ..errors import ModelError, OutputError
from ..io import atomic
from ..io.outputs import check_out_path, mark_own
from ..io.reading import read_text
from ..model.device import DTYPES
from ..model.spec import EncoderSpec

MODELING_FILE = "modeling_speechprune.py"
# speechprune/model/ files that make up MODELING_FILE, each after the ones it imports
MODELING_SOURCES = ("spec.py", "masks.py", "attention.py", "layers.py", "inference.py", "encoder.py", "hf_model.py")


def modeling_source() -> str:
    """The encoder's modules as one file that imports only torch and transformers: each in turn,
    without its ``from __future__`` line and its one-line imports of its siblings."""
    folder = Path(model_package.__file__).parent
    parts = []
    for name in MODELING_SOURCES:
        lines = read_text(folder / name).splitlines()
        lines = [l for l in lines if l != "from __future__ import annotations" and not l.startswith("from .")]
        parts.append("\n".join(lines))
    header = (
        f"# Written by speechprune {__version__}: the model code of a shrunk speech encoder.\n"
        "# Self-contained on purpose (torch + transformers only), so trust_remote_code loading needs\n"
        f"# nothing else. Source: speechprune/model/{{{','.join(n[:-3] for n in MODELING_SOURCES)}}}.py.\n"
        "from __future__ import annotations\n\n"
    )
    return header + "\n\n".join(parts) + "\n"


def stock_compatible(spec: EncoderSpec, dense: EncoderSpec) -> bool:
    """True when the shrunk encoder fits a stock transformers config: it differs from the dense
    one in its FFN units alone, by the same amount in every layer. Any other field a part's
    decision writes (a width, a structure gone) rules the stock config out."""
    widths = {layer.ffn_dim for layer in spec.layers}
    if len(widths) != 1:
        return False
    (units,) = widths
    uniform = replace(dense, layers=[replace(layer, ffn_dim=units) for layer in dense.layers])
    return spec.to_dict() == uniform.to_dict()


def check_output_folder(out: Path, overwrite: bool) -> None:
    check_out_path(out, folder=True)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise OutputError(f"--out {out} is not empty; choose another --out or pass --overwrite to replace it")


def write_model_folder(
    out: Path,
    spec: EncoderSpec,
    state: dict[str, torch.Tensor],
    *,
    dtype: str,
    card: str,
    provenance: dict,
    preprocessor: dict,
    stock: tuple[dict, dict] | None = None,
    overwrite: bool = False,
    extra: Callable[[Path], None] | None = None,
) -> None:
    """Write the model folder atomically. ``stock`` is (transformers config dict, state dict);
    ``extra(folder)`` writes more files into the folder before it is moved into place."""
    from ..model.hf_model import SpeechpruneConfig

    out = Path(out)
    check_output_folder(out, overwrite)
    tmp = atomic.temp_dir(out)
    try:
        with atomic.disk_full_names(out):  # a full disk is said plainly, naming the model folder
            tensors = {k: v.to(DTYPES[dtype]) for k, v in state.items()}
            atomic.write_safetensors(tmp / "model.safetensors", tensors, metadata={"format": "pt"})
            config = SpeechpruneConfig(
                encoder=spec.to_dict(),
                architectures=["SpeechpruneModel"],
                auto_map={
                    "AutoConfig": f"{MODELING_FILE[:-3]}.SpeechpruneConfig",
                    "AutoModel": f"{MODELING_FILE[:-3]}.SpeechpruneModel",
                },
                speechprune=provenance,
            )
            config.dtype = dtype
            config.save_pretrained(tmp)
            (tmp / MODELING_FILE).write_text(modeling_source())
            (tmp / "preprocessor_config.json").write_text(json.dumps(preprocessor, indent=2) + "\n")
            (tmp / "README.md").write_text(card)
            mark_own(tmp, "a shrunk model folder")
            if stock is not None:
                stock_config, stock_state = stock
                (tmp / "stock").mkdir()
                (tmp / "stock" / "config.json").write_text(json.dumps(stock_config, indent=2) + "\n")
                (tmp / "stock" / "preprocessor_config.json").write_text(json.dumps(preprocessor, indent=2) + "\n")
                stock_tensors = {k: v.to(DTYPES[dtype]) for k, v in stock_state.items()}
                atomic.write_safetensors(tmp / "stock" / "model.safetensors", stock_tensors, metadata={"format": "pt"})
            if extra is not None:
                extra(tmp)
            atomic.swap_folder(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def load(path: str | Path, dtype: torch.dtype | None = None):
    """Load a folder written by `speechprune shrink` with the package's own classes (no remote code),
    in ``dtype``, or with None in the dtype it was saved in (shrink --dtype)."""
    from ..model.hf_model import SpeechpruneModel

    config_path = Path(path) / "config.json"
    if not config_path.exists():
        raise ModelError(f"{path} is not a model folder (no config.json); pass the --out folder of speechprune shrink")
    if json.loads(read_text(config_path)).get("model_type") != "speechprune":
        raise ModelError(f"{path} is not a speechprune model; load stock models with transformers.AutoModel")
    from ..model.loading import check_weight_files, quiet_transformers

    check_weight_files(Path(path))
    with quiet_transformers():
        # "auto" spelled out: transformers 5 loads the saved dtype by default, 4.x float32
        return SpeechpruneModel.from_pretrained(path, dtype=dtype or "auto").eval()
