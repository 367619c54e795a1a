"""Audio as model input: padded, normalised batches (``Batch``), the validation split and its
batches, and the random training crops of ``CropSampler``, reproducible from (seed, step, rank)."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, replace

import numpy as np
import torch

from ..errors import DataError
from .audio import (
    DATA_HINT,
    SILENCE_PEAK,
    AudioCorpus,
    AudioFile,
    AudioReadError,
    SkipCounts,
    Warn,
    decode_peak,
    is_finite,
    is_silent,
    load_audio,
    non_finite_message,
)

NORMALIZE_EPS = 1e-7  # as Hugging Face's Wav2Vec2FeatureExtractor(do_normalize=True)


@dataclass
class Batch:
    waveforms: torch.Tensor  # (B, T) float32
    attention_mask: torch.Tensor  # (B, T) long, 1 = real audio, 0 = padding
    seconds: float  # real (unpadded) audio in the batch


def _tally(reasons: Iterable[str], counts: SkipCounts) -> SkipCounts:
    for reason in reasons:
        counts.add(reason)
    return counts


# ---------------------------------------------------------------- batches


def _batch_shape(sample_rate: int, crop_seconds: float, batch_seconds: float) -> tuple[int, int]:
    """(crops per batch, samples per crop)."""
    if crop_seconds <= 0 or batch_seconds <= 0:
        raise ValueError(f"crop_seconds and batch_seconds must be positive, not {crop_seconds} and {batch_seconds}")
    return max(1, round(batch_seconds / crop_seconds)), round(crop_seconds * sample_rate)


def normalized(audio: np.ndarray) -> np.ndarray:
    """Zero mean and unit variance over the last axis (samples): (x - mean) / sqrt(var + 1e-7), as
    Hugging Face's Wav2Vec2FeatureExtractor(do_normalize=True) feeds a model. The one input
    normalisation: training, validation, every command's batches and the ONNX export's check."""
    return (audio - audio.mean(-1, keepdims=True)) / np.sqrt(audio.var(-1, keepdims=True) + NORMALIZE_EPS)


def collate(crops: list[np.ndarray], length: int, sample_rate: int, normalize: bool) -> Batch:
    """Right-pad (or cut) each crop to `length` samples; normalize each over its real samples only."""
    waveforms = np.zeros((len(crops), length), dtype=np.float32)  # (B, T)
    attention_mask = np.zeros((len(crops), length), dtype=np.int64)  # (B, T)
    for row, crop in enumerate(crops):
        crop = crop[:length]
        if normalize:
            crop = normalized(crop)
        waveforms[row, : len(crop)] = crop
        attention_mask[row, : len(crop)] = 1
    real_seconds = float(attention_mask.sum()) / sample_rate
    return Batch(torch.from_numpy(waveforms), torch.from_numpy(attention_mask), real_seconds)


# ---------------------------------------------------------------- validation


def split_validation(
    corpus: AudioCorpus, *, fraction: float = 0.02, max_files: int = 200, seed: int = 0
) -> tuple[AudioCorpus, AudioCorpus]:
    """(train, validation): a held-out slice of round(fraction * files) files picked by `seed`.

    At least 1 and at most `max_files` validation files when the corpus has 2 or more, never all of
    them; none with a single file. The skip counts stay with the training corpus.
    """
    n_files = len(corpus.files)
    n_validation = max(1, min(round(fraction * n_files), max_files, n_files - 1)) if n_files >= 2 else 0
    held_out = set(np.random.default_rng(seed).choice(n_files, size=n_validation, replace=False).tolist())
    train = [file for index, file in enumerate(corpus.files) if index not in held_out]
    validation = [file for index, file in enumerate(corpus.files) if index in held_out]
    return (
        AudioCorpus(train, replace(corpus.skipped), corpus.source),
        AudioCorpus(validation, SkipCounts(), corpus.source),
    )


def validation_batches(
    corpus: AudioCorpus, *, sample_rate: int, crop_seconds: float, batch_seconds: float, normalize: bool
) -> list[Batch]:
    """The first `crop_seconds` of each file (shorter ones padded), in file order, batched.

    Files that cannot be read, or whose first crop is silent or not finite, are left out.
    """
    batch_size, crop_frames = _batch_shape(sample_rate, crop_seconds, batch_seconds)
    crops = []
    for file in corpus.files:
        try:
            crop = load_audio(file, sample_rate, seconds=crop_seconds)
        except AudioReadError:
            continue
        if is_finite(crop) and not is_silent(crop):
            crops.append(crop)
    return [
        collate(crops[start : start + batch_size], crop_frames, sample_rate, normalize)
        for start in range(0, len(crops), batch_size)
    ]


# ---------------------------------------------------------------- training crops


class CropSampler:
    """Random fixed-length training crops, one batch per step, reproducible from (seed, step, rank).

    Each rank draws from its own shard, `files[rank::world_size]`. A file that fails to decode, or
    turns out silent as a whole, or has a crop with NaN or infinite samples, is excluded from then
    on (named through `warn`) and its crop redrawn. Save `state_dict()`
    with the checkpoint: a resumed run that loads it draws bit-identical batches.
    """

    def __init__(
        self,
        corpus: AudioCorpus,
        *,
        sample_rate: int,
        crop_seconds: float,
        batch_seconds: float,
        normalize: bool,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        warn: Warn | None = None,
    ) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, {world_size}), got {rank}")
        self.files = corpus.files[rank::world_size]
        if not self.files:
            raise DataError(
                f"rank {rank} of {world_size} gets no audio file: {corpus.source} has {len(corpus.files)} usable "
                f"files; use at most {len(corpus.files)} processes or add audio to --data"
            )
        self.batch_size, self.crop_frames = _batch_shape(sample_rate, crop_seconds, batch_seconds)
        self.sample_rate = sample_rate
        self.crop_seconds = crop_seconds
        self.normalize = normalize
        self.seed = seed
        self.rank = rank
        self._warn = warn
        self._source = corpus.source
        self._corpus_skipped = replace(corpus.skipped)
        self._bad_files: dict[str, str] = {}  # path -> skip reason, found while reading
        self._has_sound: set[str] = set()  # decoded in full and not silent (a cache; never changes a batch)

    @property
    def skipped(self) -> SkipCounts:
        """The corpus's skip counts plus this shard's files found bad while reading."""
        return _tally(self._bad_files.values(), replace(self._corpus_skipped))

    def batch(self, step: int) -> Batch:
        """The batch for `step`: a pure function of (seed, step, rank, files known bad)."""
        rng = np.random.default_rng([self.seed, step, self.rank])
        usable = [file for file in self.files if file.path not in self._bad_files]
        crops: list[np.ndarray] = []
        while len(crops) < self.batch_size:
            if not usable:
                bad = _tally(self._bad_files.values(), SkipCounts())
                raise DataError(
                    f"every audio file of {self._source} (rank {self.rank}) turned out unusable while reading "
                    f"({bad.describe()}); {DATA_HINT}"
                )
            file = usable[rng.integers(len(usable))]
            crop = self._read_crop(file, rng)
            if crop is None:
                usable.remove(file)
            else:
                crops.append(crop)
        return collate(crops, self.crop_frames, self.sample_rate, self.normalize)

    def _read_crop(self, file: AudioFile, rng: np.random.Generator) -> np.ndarray | None:
        """A random crop of `file` (all of it when short), or None after marking the file bad."""
        if file.seconds > self.crop_seconds:
            last_start = file.frames - round(self.crop_seconds * file.sample_rate)
            offset_seconds, seconds = rng.integers(last_start + 1) / file.sample_rate, self.crop_seconds
        else:
            offset_seconds, seconds = 0.0, None
        try:
            crop = load_audio(file, self.sample_rate, offset_seconds=offset_seconds, seconds=seconds)
        except AudioReadError:
            self._bad_files[file.path] = "unreadable"
            return None
        if not crop.size:  # the header promised more audio than the file holds
            self._bad_files[file.path] = "unreadable"
            return None
        if not is_finite(crop):
            self._mark_non_finite(file)
            return None
        if is_silent(crop) and not self._whole_file_has_sound(file):
            return None
        return crop  # a silent crop of a file with sound is a pause: kept

    def _whole_file_has_sound(self, file: AudioFile) -> bool:
        if file.path in self._has_sound:
            return True
        try:
            peak, _ = decode_peak(file)
        except AudioReadError:
            self._bad_files[file.path] = "unreadable"
            return False
        if not math.isfinite(peak):
            self._mark_non_finite(file)
            return False
        if peak < SILENCE_PEAK:
            self._bad_files[file.path] = "silent"
            return False
        self._has_sound.add(file.path)
        return True

    def _mark_non_finite(self, file: AudioFile) -> None:
        self._bad_files[file.path] = "non_finite"
        if self._warn:
            self._warn(non_finite_message(file.path))

    def state_dict(self) -> dict:
        """JSON-serialisable: the files found bad while reading, and the skip counts."""
        return {"bad_files": dict(self._bad_files), "skipped": self.skipped.to_dict()}

    def load_state_dict(self, state: dict) -> None:
        """Restore the files found bad; entries for files outside this shard are ignored."""
        shard = {file.path for file in self.files}
        self._bad_files = {path: reason for path, reason in state["bad_files"].items() if path in shard}
