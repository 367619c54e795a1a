"""Find a model (hub id or local folder), read what it is, and load its encoder weights.

``inspect_model`` reads only configuration files, so options can be checked against the
architecture before any weights are loaded. ``load_encoder`` then loads the weights through
the stock ``from_pretrained`` of the family's base class: hub downloads, sharded and
``.bin`` checkpoints and old weight-norm key names are handled there, and no code from the
model folder is ever executed (no ``trust_remote_code``).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import re
import json
import pickle
from dataclasses import dataclass, field
from pathlib import Path

from safetensors import SafetensorError

from ..errors import ModelError
from ..io.outputs import expand
from ..io.reading import read_json_object, read_text
from .encoder import Encoder
from .families import Family, family_for
from .sizes import check_config_sizes
from .spec import EncoderSpec

WEIGHT_SUFFIXES = (".safetensors", ".bin")
HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[\w.-]+)?")  # "facebook/wav2vec2-base", or an old-style "bert-base-uncased"
HUB_TIMEOUT_S = 5


@dataclass(frozen=True)
class AudioInput:
    """How a model takes audio: at its sampling rate, normalised or raw (``io.batches.normalized``),
    with padding masks or without (Base group-norm models were trained without them)."""

    sampling_rate: int
    normalize: bool
    attention_mask: bool

    @classmethod
    def from_preprocessor(cls, preprocessor: dict, conv_norm: str) -> AudioInput:
        """As a ``preprocessor_config.json`` says, with the feature extractor's defaults where it is
        silent: 16 kHz, normalised, padding masks only with a LayerNorm in every conv layer."""
        return cls(sampling_rate=int(preprocessor.get("sampling_rate", 16000)),
                   normalize=bool(preprocessor.get("do_normalize", True)),
                   attention_mask=bool(preprocessor.get("return_attention_mask", conv_norm == "layer")))

    def to_preprocessor(self) -> dict:
        """The ``preprocessor_config.json`` that says this (a shrunk model folder's; read back by
        ``from_preprocessor``)."""
        return {
            "feature_extractor_type": "Wav2Vec2FeatureExtractor",
            "feature_size": 1,
            "sampling_rate": self.sampling_rate,
            "padding_value": 0.0,
            "padding_side": "right",
            "do_normalize": self.normalize,
            "return_attention_mask": self.attention_mask,
        }


@dataclass
class ModelInfo:
    source: str  # what the user passed
    path: str | None  # local folder (None for a hub id until downloaded)
    revision: str | None
    family: Family
    spec: EncoderSpec
    architecture: str  # class named in config.json, e.g. Wav2Vec2ForCTC
    audio: AudioInput  # how it takes audio, as its preprocessor_config.json says
    config: object = field(repr=False, default=None)  # the transformers config

    @property
    def takes_part(self) -> bool:
        return self.architecture != self.family.base_class


@dataclass
class LoadedEncoder:
    encoder: Encoder
    info: ModelInfo
    left_out: list[str]  # top-level parts of the checkpoint that are not the encoder (task heads)
    weights_sha256: str | None
    commit: str | None  # hub commit hash, when loaded from the hub


def _read_json(path: Path) -> dict:
    try:
        return read_json_object(path)
    except (OSError, ValueError) as error:  # JSONDecodeError is a ValueError
        raise ModelError(f"cannot read {path}: {error}; the model folder looks damaged, re-save or re-download it")


def local_folder(source: str) -> Path | None:
    """The local path ``source`` names, or None when it is a hub id.

    The one owner of "local or hub": what exists here is local (``local_path``); something that
    looks like a path (starts with ``.``, ``/`` or ``~``, has a backslash or more than one ``/``,
    is no valid hub id, or starts with a folder that exists here, like ``models/nothing``) is
    never sent to the hub, so a typo fails at once instead of after the hub client's retries.
    """
    path = local_path(source)
    if path is not None:
        return path
    first = source.split("/")[0]
    looks_local = (source.startswith((".", "/", "~")) or "\\" in source or not HUB_ID.fullmatch(source)
                   or ("/" in source and Path(first).exists()))
    if looks_local:
        raise ModelError(f"model folder {source} does not exist (no local folder of that name); "
                         "check the path, or pass a hub id like facebook/wav2vec2-base")
    return None


def local_path(source: str) -> Path | None:
    """The file or folder ``source`` names here (``~`` expanded), or None when nothing is there."""
    path = expand(source)
    return path if path.exists() else None


def resolved_path(source: str) -> str:
    """What names ``source`` wherever it is given from: a local file or folder as its resolved path
    (``data/`` = ``data`` = ``/abs/data``), anything else (a hub id) as it is."""
    path = local_path(source)
    return str(path.resolve()) if path is not None else source


@functools.cache
def hub_offline() -> bool:
    """True when hub files must come from the local cache: HF_HUB_OFFLINE is set, or the hub
    does not answer within a few seconds (asked once; the hub client would retry for ~30 s)."""
    from huggingface_hub import constants
    from huggingface_hub.utils import get_session

    if constants.HF_HUB_OFFLINE:
        return True
    try:
        get_session().head(constants.ENDPOINT, timeout=HUB_TIMEOUT_S)
    except Exception:  # no network, DNS, proxy, TLS: all mean "use the cache"
        return True
    return False


def _unreachable(source: str) -> ModelError:
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return ModelError(f"{source} is not in the local Hugging Face cache and HF_HUB_OFFLINE is set; "
                          "unset it to download, or pass a local folder saved with save_pretrained")
    return ModelError(f"cannot reach the Hugging Face Hub for {source}, and it is not in the local cache; "
                      "download it elsewhere and pass the folder, or set HF_HUB_OFFLINE=1 to use the local cache")


def _config_file(source: str, revision: str | None, name: str, required: bool) -> Path | None:
    local = local_folder(source)
    if local is not None:
        if not local.is_dir():
            raise ModelError(f"{source} is a file, not a model folder; pass a folder saved with save_pretrained or a hub id")
        path = local / name
        if path.is_symlink() and not path.exists():  # a link to nothing is a damaged folder, not a missing file
            raise ModelError(f"{path} is a link to {os.readlink(path)}, which does not exist; put the real {name} "
                             f"in {local}, or re-save or re-download the model")
        if not path.exists():
            if required:
                raise ModelError(
                    f"{source} is not a model folder (no {name}); pass a folder saved with save_pretrained or a hub id"
                )
            return None
        return path
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError

    try:
        return Path(hf_hub_download(source, name, revision=revision, local_files_only=hub_offline()))
    except LocalEntryNotFoundError as error:  # offline, and not in the cache
        if required:
            raise _unreachable(source) from error
        return None
    except EntryNotFoundError as error:  # the repo exists and lacks this file
        if required:
            raise ModelError(f"{source} on the Hugging Face Hub has no {name}; it is not a transformers model") from error
        return None
    except Exception as error:  # unknown repo, gated repo, server errors: one message for all
        kind = type(error).__name__
        raise ModelError(
            f"cannot get {name} of {source!r} from the Hugging Face hub ({kind}); "
            "check the id and your network, or pass a local folder saved with save_pretrained"
        ) from error


def inspect_model(source: str, revision: str | None = None) -> ModelInfo:
    """Read the config of ``source`` (no weights) and check that speechprune supports it."""
    config_path = _config_file(source, revision, "config.json", required=True)
    raw = _read_json(config_path)
    model_type = raw.get("model_type")
    if model_type is None:
        raise ModelError(f"{config_path} has no model_type; it is not a transformers model config")
    family = family_for(model_type, where=source)
    check_config_sizes(raw, str(config_path))  # before transformers or we allocate anything of that size

    import transformers

    config_class = getattr(transformers, family.base_class.replace("Model", "Config"))
    config = config_class.from_dict({k: v for k, v in raw.items() if k not in ("auto_map",)})
    unsupported = family.unsupported_options(config)
    if unsupported:
        raise ModelError(f"{source}: unsupported setting {', '.join(unsupported)}; speechprune prunes plain encoders")
    architectures = raw.get("architectures") or [family.base_class]
    architecture = architectures[0]
    if not architecture.startswith(family.base_class.removesuffix("Model")):
        raise ModelError(f"{source}: unsupported architecture {architecture}; expected {family.base_class} or a ...For* class")

    preprocessor_path = _config_file(source, revision, "preprocessor_config.json", required=False)
    preprocessor = _read_json(preprocessor_path) if preprocessor_path else {}
    spec = family.spec_from_config(config)
    audio = AudioInput.from_preprocessor(preprocessor, spec.conv_norm)
    local = local_folder(source)
    path = str(local.resolve()) if local is not None else None
    return ModelInfo(source=source, path=path, revision=revision, family=family, spec=spec,
                     architecture=architecture, audio=audio, config=config)


@contextlib.contextmanager
def quiet_transformers():
    """Silence transformers' loading/saving logs and progress bars for the duration."""
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def _hash_weights(folder: Path) -> str | None:
    files = sorted(p for p in folder.iterdir() if p.suffix in WEIGHT_SUFFIXES)
    if not files:
        return None
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.name.encode())
        with path.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 23), b""):
                digest.update(chunk)
    return digest.hexdigest()


SAFETENSORS_MAX_HEADER = 100 << 20  # safetensors' own limit on the JSON header


def check_weight_files(folder: Path) -> None:
    """Refuse, naming the file and the fix, weights that transformers would report as missing,
    or fail on with a bare parser error: an unreadable file, a link to something that is not a
    file (``/dev/zero``) or to nothing, a shard that a ``*.index.json`` lists but the folder
    lacks, and a ``.safetensors`` file whose header is not a safetensors header."""
    for index in sorted(folder.glob(f"*{WEIGHT_SUFFIXES[0]}.index.json")) + sorted(folder.glob("*.bin.index.json")):
        try:
            shards = sorted(set(json.loads(read_text(index))["weight_map"].values()))
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
            raise ModelError(f"cannot read the shard index {index} ({type(error).__name__}: {error}); "
                             "the model folder looks damaged, re-save or re-download it") from None
        missing = [shard for shard in shards if not (folder / shard).exists()]
        if missing:
            raise ModelError(f"{folder / missing[0]} is missing ({len(missing)} of the {len(shards)} shards that "
                             f"{index.name} lists); copy or download the missing shards into {folder}")
    for path in sorted(folder.iterdir()):
        if path.suffix not in WEIGHT_SUFFIXES:
            continue
        if not path.is_file():
            link = f" (a link to {os.readlink(path)})" if path.is_symlink() else ""
            what = "does not exist" if path.is_symlink() and not path.exists() else "is not a regular file"
            raise ModelError(f"{path}{link} {what}; put the real weights file in {folder}")
        if not os.access(path, os.R_OK):  # transformers reports an unreadable file as a missing one
            raise ModelError(f"permission denied reading {path}; make it readable (chmod a+r) or copy the folder")
        if path.suffix == WEIGHT_SUFFIXES[0]:
            _check_safetensors_header(path)


def _check_safetensors_header(path: Path) -> None:
    """A safetensors file starts with the length of its JSON header (8 bytes, little endian), then the header."""
    size = path.stat().st_size
    with path.open("rb") as handle:
        length = int.from_bytes(handle.read(8), "little") if size >= 8 else -1
        header = handle.read(length) if 2 <= length <= min(size - 8, SAFETENSORS_MAX_HEADER) else b""
    try:
        if not isinstance(json.loads(header.decode("utf-8")), dict):
            raise ValueError
    except ValueError:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise ModelError(f"{path} is not a safetensors file (its header is damaged or it holds other bytes); "
                         "the weights file looks damaged, re-save or re-download it") from None


def from_pretrained(info: ModelInfo):
    """(the transformers base model of ``info`` in float32, its loading info): the one place
    weights are read with transformers, so every command words a bad weights file the same way."""
    import transformers

    base_class = getattr(transformers, info.family.base_class)
    if info.path:
        check_weight_files(Path(info.path))
    try:
        with quiet_transformers():  # we report unused, missing and mismatched weights ourselves
            model, loading = base_class.from_pretrained(
                info.path or info.source, revision=info.revision, output_loading_info=True, dtype="float32",
                ignore_mismatched_sizes=True, local_files_only=info.path is None and hub_offline(),
            )
    except (pickle.UnpicklingError, OSError) as error:
        unpickling = _unpickling_error(error)
        if unpickling is None:
            raise ModelError(
                f"cannot load weights of {info.source}: {str(error).splitlines()[0].rstrip('.')}; "
                "the folder needs model.safetensors or pytorch_model.bin next to config.json"
            ) from error
        if "weights only" not in str(unpickling).lower():
            raise _damaged(info, unpickling) from error
        raise ModelError(_needs_code_execution(info)) from error
    except (SafetensorError, RuntimeError, EOFError) as error:
        raise _damaged(info, error) from error
    if loading["mismatched_keys"]:
        raise ModelError(f"the weights of {info.source} do not fit its config.json: "
                         f"{_first_mismatch(model, loading['mismatched_keys'])} "
                         f"({len(loading['mismatched_keys'])} tensors differ); "
                         "use the config.json that was saved with these weights")
    return model, loading


def _unpickling_error(error: BaseException) -> pickle.UnpicklingError | None:
    """The UnpicklingError of torch.load behind ``error``: transformers 4.x re-raises it as an
    OSError (about TF checkpoints), 5.x lets it through."""
    while error is not None and not isinstance(error, pickle.UnpicklingError):
        error = error.__cause__ or error.__context__
    return error


def _first_mismatch(model, mismatched) -> str:
    """The first tensor (in the model's order) whose shape differs between the weights file and
    the config. transformers 5 lists (key, file shape, config shape); 4.x lists the keys only,
    so there the config's shape is all we can name."""
    order = {key: i for i, key in enumerate(model.state_dict())}
    first = min(mismatched, key=lambda m: order.get(m if isinstance(m, str) else m[0], len(order)))
    if isinstance(first, str):
        return f"{first} in the weights file is not {tuple(model.state_dict()[first].shape)} as by the config"
    key, saved, expected = first
    return f"{key} is {tuple(saved)} in the weights file but {tuple(expected)} by the config"


def _needs_code_execution(info: ModelInfo) -> str:
    # transformers 5 ignores weights_only=False for .bin files, so the advice converts with torch itself
    folder = Path(info.path) if info.path else Path("DIR")
    bins = sorted(folder.glob("*.bin")) or [folder / "pytorch_model.bin"]
    return (
        f"{bins[0]} is a pickle that needs code execution to load, which speechprune refuses (a pickle can run "
        "anything); if you trust its source, convert it to safetensors: python -c \"import torch; "
        f"from safetensors.torch import save_file; sd = torch.load('{bins[0]}', weights_only=False); "
        "save_file({k: v.contiguous() for k, v in sd.items() if torch.is_tensor(v)}, "
        f"'{folder / 'model.safetensors'}', metadata={{'format': 'pt'}})\" and move {bins[0].name} away"
    )


def _damaged(info: ModelInfo, error: BaseException) -> ModelError:
    return ModelError(f"cannot load weights of {info.source}: {str(error).splitlines()[0].rstrip('.')}; "
                      "the weights file looks damaged, re-save or re-download it")


def load_encoder(info: ModelInfo) -> LoadedEncoder:
    """Load the dense encoder weights of ``info`` into an ``Encoder`` (float32, eval mode)."""
    model, loading = from_pretrained(info)
    missing = [k for k in loading["missing_keys"] if k != "masked_spec_embed"]
    if missing:
        raise ModelError(
            f"{info.source} has no trained weights for {len(missing)} encoder tensors (e.g. {missing[0]}); "
            f"it is not a {info.family.base_class} checkpoint"
        )
    left_out = sorted({k.split(".")[0] for k in loading["unexpected_keys"]})

    encoder = Encoder(info.spec)
    encoder.load_state_dict(info.family.to_encoder_keys(model.state_dict()), strict=True)
    encoder.eval()
    folder = Path(info.path) if info.path else _snapshot_folder(model)
    return LoadedEncoder(
        encoder=encoder,
        info=info,
        left_out=left_out,
        weights_sha256=_hash_weights(folder) if folder else None,
        commit=getattr(model.config, "_commit_hash", None),
    )


def _snapshot_folder(model) -> Path | None:
    name = getattr(model.config, "_name_or_path", None)
    if not name:
        return None
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(name, allow_patterns=["*.safetensors", "*.bin"], local_files_only=True))
    except Exception:
        return None


def describe_source(loaded: LoadedEncoder) -> str:
    """One line saying which part of the checkpoint was taken."""
    info = loaded.info
    if not info.takes_part and not loaded.left_out:
        return f"{info.source}: {info.family.base_class}"
    dropped = f" (left out: {', '.join(loaded.left_out)})" if loaded.left_out else ""
    return f"{info.source}: took the {info.family.base_class} encoder of a {info.architecture} checkpoint{dropped}"
