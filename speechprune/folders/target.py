"""A model the user names — stock (hub id or folder), shrunk folder, or prune run — read from
config files, then loaded for inference.

``read_target`` reads only config files (cheap: commands check every input with it before any
weights load); ``load_target`` then loads the weights. Every command that takes a model goes
through ``read_target``, and every command that runs our encoder on audio (``analyze``,
``eval``, ``export-onnx``, bench's masked runs and ONNX exports) through ``load_target``, so a
model is fed the same way everywhere: at its sampling rate, normalized or not, with an attention
mask only when it was trained with one.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import ModelError, UsageError
from ..io.reading import read_json_object
from ..model.encoder import Encoder
from ..model.loading import AudioInput, ModelInfo, inspect_model, load_encoder, local_folder
from ..model.sizes import check_encoder_sizes
from ..model.spec import EncoderSpec
from .run import read_run
from .run_record import RunRecord
from .shrunk import load


@dataclass(frozen=True)
class Target(AudioInput):
    """A model as read from its config files: how it takes audio (``AudioInput``'s fields, the one
    rule of ``model/loading.py``), its kind and its dense spec."""

    source: str
    kind: str  # "stock" | "shrunk" | "run"
    spec: EncoderSpec
    info: ModelInfo | None = None  # stock models: what inspect_model read

    @classmethod
    def of(cls, audio: AudioInput, source: str, kind: str, spec: EncoderSpec, info: ModelInfo | None = None) -> Target:
        return cls(audio.sampling_rate, audio.normalize, audio.attention_mask, source, kind, spec, info)


def read_target(source: str) -> Target:
    """What ``source`` is, from its config files only: a shrunk folder, a prune run, or a stock model."""
    folder = local_folder(source)  # None: a hub id
    if folder is not None and (folder / "config.json").is_file():
        config = _read_json(folder / "config.json")
        if config.get("model_type") == "speechprune":
            preprocessor = folder / "preprocessor_config.json"
            pre = _read_json(preprocessor) if preprocessor.is_file() else {}
            check_encoder_sizes(config.get("encoder", {}), str(folder / "config.json"))
            spec = EncoderSpec.from_dict(config["encoder"])
            audio = AudioInput.from_preprocessor(pre, spec.conv_norm)
            return Target.of(audio, source, "shrunk", spec)
        if (folder / "encoder.json").is_file() and "audio" in config:
            audio = RunRecord.from_dict(config, str(folder / "config.json")).audio
            return Target.of(audio, source, "run", EncoderSpec.from_dict(_read_json(folder / "encoder.json")))
    info = inspect_model(source)
    return Target.of(info.audio, source, "stock", info.spec, info)


def _read_json(path: Path) -> dict:
    try:
        return read_json_object(path)
    except (OSError, ValueError) as error:  # JSONDecodeError is a ValueError
        raise ModelError(f"cannot read {path}: {error}; the folder looks damaged: make the file readable, or "
                         "re-save or re-download the model")


def load_target(target: Target, device: torch.device):
    """(an EncoderModules model in eval mode, base masks or None, the run snapshot or None)."""
    if target.kind == "stock":
        return load_encoder(target.info).encoder.to(device), None, None
    if target.kind == "shrunk":
        return load(target.source).to(device=device, dtype=torch.float32), None, None
    snap = read_run(target.source)
    encoder = Encoder(snap.spec).eval()
    encoder.load_state_dict(snap.state)
    masks = snap.layout.values(snap.values.float().to(device)).masks()
    return encoder.to(device), masks, snap


def check_teacher(student: Target, teacher: Target) -> None:
    """Refuse a ``--teacher`` whose hidden states cannot be compared with the student's, state by state."""
    if teacher.kind == "run":
        raise UsageError("--teacher must be a model (a stock model or a shrunk folder), not a prune run")
    if teacher.sampling_rate != student.sampling_rate:
        raise UsageError(f"--teacher {teacher.source} takes {teacher.sampling_rate} Hz audio but "
                         f"{student.source} takes {student.sampling_rate} Hz")
    if (len(teacher.spec.layers), teacher.spec.hidden_size) != (len(student.spec.layers), student.spec.hidden_size):
        raise UsageError(f"--teacher {teacher.source} has {len(teacher.spec.layers)} layers of width "
                         f"{teacher.spec.hidden_size}, {student.source} {len(student.spec.layers)} of width "
                         f"{student.spec.hidden_size}; compare a student with the model it was pruned from")


@dataclass
class ModelReport:
    """The head of a report on one model (analyze, eval): the speechprune that wrote it, the model
    as ``model_fields`` describes it, and the seed of the report's random draws."""

    speechprune: str
    model: str  # as the user named it
    kind: str  # "stock" | "shrunk" | "run"
    family: str
    layers: int
    seed: int


def model_fields(source: str, target: Target, spec: EncoderSpec) -> dict:
    """What every report says first about the model it describes (``ModelReport``)."""
    return {"model": source, "kind": target.kind, "family": spec.family, "layers": len(spec.layers)}
