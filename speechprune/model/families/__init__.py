"""Supported model families, looked up by the `model_type` of a transformers config."""

from ...errors import ModelError
from .base import Family
from .hubert import Hubert
from .wav2vec2 import Wav2Vec2
from .wavlm import WavLM

FAMILIES: dict[str, Family] = {f.model_type: f for f in (Wav2Vec2(), Hubert(), WavLM())}


def supported() -> str:
    return ", ".join(f"{f.base_class} ({f.model_type})" for f in FAMILIES.values())


def family_for(model_type: str, where: str = "") -> Family:
    family = FAMILIES.get(model_type)
    if family is None:
        raise ModelError(
            f"unsupported architecture {model_type!r}{' in ' + where if where else ''}: "
            f"speechprune supports {supported()} and their ...For* task classes"
        )
    return family


def family_by_name(name: str) -> Family:
    for family in FAMILIES.values():
        if family.name == name:
            return family
    raise ModelError(f"unknown model family {name!r}; known: {', '.join(f.name for f in FAMILIES.values())}")


__all__ = ["FAMILIES", "Family", "family_for", "family_by_name", "supported"]
