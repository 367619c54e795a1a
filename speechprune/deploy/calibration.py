"""The audio that static int8 (``quantize.STATIC``) calibrates its activation ranges on: a
seeded choice of clips from the user's audio (``--data``), fed one at a time to the float32
graph by ``CalibrationReader`` while ONNX Runtime records each tensor's range.

Ranges measured on real speech are what the quantized graph meets in use; generated or random
input gives other ranges (the CNN's first outputs differ the most). ``CLIPS`` clips of
``SECONDS`` each (about a minute of speech; ranges are ORT's MinMax, the extremes seen) take
seconds to calibrate, and kept every hidden state of the quality benchmark's CTC teacher at a
cosine of 0.9998 to float32 (docs/deploy.md).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..errors import DataError
from ..io.audio import AudioCorpus, AudioReadError, is_finite, is_silent, load_audio
from ..io.batches import normalized

CLIPS = 16  # calibration clips at most, chosen by the seed
SECONDS = 4.0  # of each file read for calibration: its centre


def _chosen(count: int, seed: int) -> list[int]:
    """The indices of up to ``CLIPS`` of ``count`` items, chosen by ``seed``, in order."""
    return sorted(np.random.default_rng(seed).permutation(count)[:CLIPS].tolist())


def _as_fed(audio: np.ndarray, normalize: bool) -> np.ndarray:
    """A clip (T,) as the model takes it: normalised when it is (``io.batches.normalized``), float32."""
    return (normalized(audio) if normalize else audio).astype(np.float32)


def calibration_clips(clips: Sequence[np.ndarray], *, normalize: bool, seed: int) -> list[np.ndarray]:
    """Up to ``CLIPS`` of ``clips`` (each (T,) at the model's rate, already read: ``eval``'s
    training clips) chosen by ``seed``, as the model takes them."""
    return [_as_fed(clips[i], normalize) for i in _chosen(len(clips), seed)]


def read_calibration(corpus: AudioCorpus, *, sampling_rate: int, normalize: bool, seed: int) -> list[np.ndarray]:
    """The centre ``SECONDS`` of up to ``CLIPS`` files of ``corpus`` chosen by ``seed``, read at
    ``sampling_rate`` and fed as the model takes them. Files that do not decode, or whose window
    is silent or not finite, are left out; DataError when none is left."""
    clips = []
    for index in _chosen(len(corpus.files), seed):
        file = corpus.files[index]
        try:
            audio = load_audio(file, sampling_rate, offset_seconds=max(file.seconds - SECONDS, 0.0) / 2, seconds=SECONDS)
        except AudioReadError:
            continue
        if is_finite(audio) and not is_silent(audio):
            clips.append(_as_fed(audio, normalize))
    if not clips:
        raise DataError(f"no readable speech to calibrate on in {corpus.source}: pass --data with other audio")
    return clips


class CalibrationReader:
    """ONNX Runtime's ``CalibrationDataReader`` (it recognises any class with ``get_next``): each
    clip as one batch, ``input_values`` (1, T), with an ``attention_mask`` of ones for a graph
    that takes one (no padding)."""

    def __init__(self, clips: Sequence[np.ndarray], takes_mask: bool):
        self.clips, self.takes_mask = iter(clips), takes_mask

    def get_next(self) -> dict | None:
        clip = next(self.clips, None)
        if clip is None:
            return None
        fed = {"input_values": clip[None]}  # (1, T)
        if self.takes_mask:
            fed["attention_mask"] = np.ones((1, len(clip)), dtype=np.int64)
        return fed
