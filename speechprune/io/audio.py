"""Find, check and read audio: folders, manifests and files become an ``AudioCorpus`` of usable
files, and ``load_audio`` reads a window of one at the model's sampling rate. (Batches of it:
``batches``.)"""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from ..errors import DataError
from .progress import Reporter
from .reading import is_regular_file, read_text

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3")  # matched case-insensitively
SILENCE_PEAK = 1e-4  # audio whose mono peak |x| stays below this is silent
# Decoded samples beyond this are not sound but raw or damaged values (a float file of 1e30s):
# finite, yet their float32 variance overflows and the normalised crop becomes all zeros.
MAX_AMPLITUDE = 1e4
_DECODE_BLOCK_FRAMES = 1 << 20  # whole-file checks decode this many frames at a time
_DECODE_ERRORS = (RuntimeError, OSError, ValueError, EOFError, sf.SoundFileError)
DATA_HINT = "pass a folder of wav/flac/ogg/mp3 speech files or a manifest with --data"

Progress = Callable[[int, int], None]
Warn = Callable[[str], None]


@dataclass(frozen=True)
class AudioFile:
    """A usable audio file as its header describes it."""

    path: str  # absolute
    frames: int  # at the native rate
    sample_rate: int
    channels: int

    @property
    def seconds(self) -> float:
        return self.frames / self.sample_rate


SKIP_REASONS = ("unreadable", "missing", "empty", "too_short", "silent", "non_finite")
_NAMED_MISSING = 3  # missing paths named in messages; a manifest of a moved corpus can miss thousands


@dataclass
class SkipCounts:
    """Files left out, by reason (SKIP_REASONS)."""

    unreadable: int = 0
    missing: int = 0  # manifest entries that name no file
    empty: int = 0
    too_short: int = 0
    silent: int = 0
    non_finite: int = 0  # NaN, infinite or out-of-range samples (MAX_AMPLITUDE), which would turn the weights into NaN
    missing_paths: tuple[str, ...] = ()  # the first few missing entries, to name them

    @property
    def total(self) -> int:
        return sum(self.to_dict().values())

    def to_dict(self) -> dict[str, int]:
        return {reason: getattr(self, reason) for reason in SKIP_REASONS}

    def add(self, reason: str, path: str | None = None) -> None:
        setattr(self, reason, getattr(self, reason) + 1)
        if reason == "missing" and len(self.missing_paths) < _NAMED_MISSING:
            self.missing_paths += (path,)

    def describe(self) -> str:
        """E.g. "2 unreadable, 1 missing (/data/a.wav), 1 silent"."""
        parts = []
        for reason, count in self.to_dict().items():
            if count:
                named = ""
                if reason == "missing" and self.missing_paths:
                    named = f" ({', '.join(self.missing_paths)}{', ...' if count > len(self.missing_paths) else ''})"
                parts.append(f"{count} {reason.replace('_', '-' if reason == 'non_finite' else ' ')}{named}")
        return ", ".join(parts) or "none skipped"


@dataclass
class AudioCorpus:
    files: list[AudioFile]  # usable files, sorted by path
    skipped: SkipCounts
    source: str

    @property
    def seconds(self) -> float:
        return sum(file.seconds for file in self.files)


class AudioReadError(DataError):
    """An audio file that libsndfile cannot decode."""


# ---------------------------------------------------------------- scanning


def scan_audio(
    source: str | os.PathLike,
    *,
    min_seconds: float = 1.0,
    full_check_max_seconds: float = 3600.0,
    progress: Progress | None = None,
    warn: Warn | None = None,
) -> AudioCorpus:
    """List the usable audio of a folder (searched recursively), a manifest, or a single audio file.

    A manifest has one path per line, optionally followed by a TAB and a sample count (fairseq; ignored,
    the file header is authoritative). Relative paths resolve against the manifest's folder, or against
    the first line when that names a directory (fairseq's root line). Blank and `#` lines are ignored.

    Every file's header is read: files that cannot be opened, have no frames or are shorter than
    `min_seconds` are skipped. When the remaining files total at most `full_check_max_seconds`, each is
    also decoded in full now, so undecodable and silent files are skipped before training; bigger
    corpora skip that up-front cost and CropSampler finds such files while it reads crops. Files with NaN,
    infinite or out-of-range samples (beyond MAX_AMPLITUDE) are skipped as "non_finite", and named through `warn`.

    `progress(done, total)` is called after each file; `total` grows once, when the full check starts.
    Raises DataError when `source` is missing or yields no usable file.
    """
    source_path = Path(source).expanduser()
    if not source_path.exists():
        raise DataError(f"audio source {source_path} does not exist; {DATA_HINT}")
    candidates = _list_candidates(source_path)
    if not candidates:
        extensions = "/".join(AUDIO_EXTENSIONS)
        raise DataError(f"no audio files found in {source_path} (looked for {extensions}); {DATA_HINT}")

    skipped = SkipCounts()
    files = _by_header(candidates, min_seconds, skipped, progress)
    if sum(file.seconds for file in files) <= full_check_max_seconds:
        files = _by_content(files, min_seconds, skipped, len(candidates), progress, warn)
    if not files:
        raise DataError(
            f"no usable audio in {source_path}: {skipped.total} files skipped ({skipped.describe()}); "
            f"pass a folder of wav/flac/ogg/mp3 speech files of at least {min_seconds:g} s, "
            "or a manifest, with --data"
        )
    return AudioCorpus(sorted(files, key=lambda file: file.path), skipped, str(source_path))


def _by_header(candidates: list[str], min_seconds: float, skipped: SkipCounts,
               progress: Progress | None) -> list[AudioFile]:
    """The ``candidates`` whose header opens and says they last ``min_seconds`` or more; the
    others counted in ``skipped``. ``progress(done, len(candidates))`` after each."""
    files = []
    for done, path in enumerate(candidates, start=1):
        file = _read_header(path)
        if file is None:
            reason = "unreadable" if os.path.lexists(path) else "missing"
        else:
            reason = _length_problem(file.frames, file.sample_rate, min_seconds)
        if reason:
            skipped.add(reason, path)
        else:
            files.append(file)
        if progress:
            progress(done, len(candidates))
    return files


def _by_content(header_files: list[AudioFile], min_seconds: float, skipped: SkipCounts, done: int,
                progress: Progress | None, warn: Warn | None) -> list[AudioFile]:
    """The ``header_files`` that decode in full to finite, in-range, long enough audio; the others
    counted in ``skipped`` (non-finite ones also named through ``warn``). ``progress`` goes on
    from ``done`` files, its total grown by these."""
    total = done + len(header_files)
    files = []
    for file in header_files:
        reason, file = _check_content(file, min_seconds)
        if reason == "non_finite" and warn:
            warn(non_finite_message(file.path))
        if reason:
            skipped.add(reason)
        else:
            files.append(file)
        done += 1
        if progress:
            progress(done, total)
    return files


def scan_reported(source: str | os.PathLike, reporter: Reporter, **options) -> AudioCorpus:
    """``scan_audio`` for a command: its progress goes to ``reporter`` (a bar on a terminal,
    nothing in a pipeline or with --quiet), and so do its warnings."""
    with reporter.counting(f"scanning {Path(source).name or source}") as progress:
        return scan_audio(source, progress=progress, warn=reporter.warning, **options)


def _list_candidates(source: Path) -> list[str]:
    """Absolute paths to try, each real file once, in a deterministic order."""
    if source.is_dir():
        paths = _find_audio_files(source)
    elif source.suffix.lower() in AUDIO_EXTENSIONS:
        paths = [os.path.abspath(source)]
    else:
        paths = _read_manifest(source)
    unique: dict[str, str] = {}  # real path -> first path naming it
    for path in paths:
        unique.setdefault(os.path.realpath(path), path)
    return list(unique.values())


def _find_audio_files(folder: Path) -> list[str]:
    """Audio files under `folder`, following symlinks but entering each real directory once."""
    found: list[str] = []
    visited: set[str] = set()
    for dirpath, dirnames, filenames in os.walk(os.path.abspath(folder), followlinks=True):
        real = os.path.realpath(dirpath)
        if real in visited:  # a symlink loop or a second link to a visited directory
            dirnames.clear()
            continue
        visited.add(real)
        dirnames.sort()
        audio_names = sorted(name for name in filenames if name.lower().endswith(AUDIO_EXTENSIONS))
        found += [os.path.join(dirpath, name) for name in audio_names]
    return found


def _read_manifest(manifest: Path) -> list[str]:
    try:
        text = read_text(manifest, encoding="utf-8-sig")  # the byte-order mark some editors write is no path
    except (OSError, UnicodeDecodeError) as error:
        raise DataError(f"cannot read manifest {manifest} as text ({_one_line(error)}); {DATA_HINT}") from error
    entries = [line.split("\t")[0].strip() for line in text.splitlines()]
    entries = [entry for entry in entries if entry and not entry.startswith("#")]
    root = manifest.parent.absolute()
    if entries and (root / entries[0]).is_dir():  # fairseq: the first line is the audio root
        root = root / entries.pop(0)
    if entries and not any(entry.lower().endswith(AUDIO_EXTENSIONS) for entry in entries):
        raise DataError(f"{manifest} is not a manifest: none of its {len(entries)} lines names a "
                        f"{'/'.join(AUDIO_EXTENSIONS)} file; {DATA_HINT}")  # a config or a report given as --data
    return [os.path.abspath(root / entry) for entry in entries]


def _read_header(path: str) -> AudioFile | None:
    """The file's header, or None when libsndfile cannot open it (or it is not a regular file: a
    FIFO named x.wav would block the scan for ever)."""
    if not is_regular_file(path):
        return None
    try:
        with _quiet_decoder(path):
            info = sf.info(path)
    except _DECODE_ERRORS:
        return None
    if info.samplerate <= 0 or info.channels <= 0:
        return None
    return AudioFile(path, info.frames, info.samplerate, info.channels)


def _length_problem(frames: int, sample_rate: int, min_seconds: float) -> str | None:
    if frames <= 0:
        return "empty"
    if frames / sample_rate < min_seconds:
        return "too_short"
    return None


def _check_content(file: AudioFile, min_seconds: float) -> tuple[str | None, AudioFile]:
    """Decode the whole file: (skip reason or None, the file with its decoded length)."""
    try:
        peak, frames = decode_peak(file)
    except AudioReadError:
        return "unreadable", file
    if not math.isfinite(peak):
        return "non_finite", file
    reason = _length_problem(frames, file.sample_rate, min_seconds)
    if not reason and peak < SILENCE_PEAK:
        reason = "silent"
    return reason, replace(file, frames=frames)


def decode_peak(file: AudioFile) -> tuple[float, int]:
    """Decode all of `file` block by block: (peak |x| of the mono mix, frames decoded).

    The peak is inf when any sample is NaN, infinite or beyond MAX_AMPLITUDE (``max`` alone would
    drop a NaN)."""
    peak, frames = 0.0, 0
    try:
        with _quiet_decoder(file.path), sf.SoundFile(file.path) as sound:
            for block in sound.blocks(_DECODE_BLOCK_FRAMES, dtype="float32", always_2d=True):  # (N, C)
                if len(block):
                    block_peak = float(np.abs(block.mean(axis=1)).max())
                    peak = max(peak, block_peak) if block_peak <= MAX_AMPLITUDE else math.inf  # NaN too
                    frames += len(block)
    except _DECODE_ERRORS as error:
        raise AudioReadError(_unreadable_message(file.path, error)) from error
    return peak, frames


@contextlib.contextmanager
def _quiet_decoder(path: str):
    """libmpg123 (libsndfile's mp3 decoder) prints its complaints about a damaged mp3 straight to
    file descriptor 2, past Python; we report such files ourselves, so fd 2 points at /dev/null
    while an mp3 is opened or decoded. (Another thread's writes in that window, such as a
    progress bar refresh, are lost too; the next refresh redraws it.)"""
    if not path.lower().endswith(".mp3"):
        yield
        return
    sys.stderr.flush()
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def _unreadable_message(path: str, error: BaseException) -> str:
    return f"cannot decode {path} ({_one_line(error)}); re-encode it as wav or flac, or leave it out of --data"


def non_finite_message(path: str) -> str:
    return (f"skipping {path}: it holds NaN or infinite samples, or samples out of range (|x| > "
            f"{MAX_AMPLITUDE:g}, not sound); fix it or leave it out of --data")


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__


def corpus_fingerprint(corpus: AudioCorpus) -> dict:
    """What identifies the usable audio of a corpus cheaply (no audio read): the number of files,
    their bytes, and a SHA-256 of each file's path (relative to the source) and size."""
    root = Path(corpus.source)
    root = root if root.is_dir() else root.parent
    digest, total = hashlib.sha256(), 0
    for file in corpus.files:
        size = os.path.getsize(file.path)
        total += size
        digest.update(f"{os.path.relpath(file.path, root)}\t{size}\n".encode())
    return {"files": len(corpus.files), "bytes": total, "sha256": digest.hexdigest()}


# ---------------------------------------------------------------- reading


def load_audio(
    file: AudioFile, sample_rate: int, *, offset_seconds: float = 0.0, seconds: float | None = None
) -> np.ndarray:
    """Float32 mono (mean of channels) at `sample_rate`: `seconds` of `file` from `offset_seconds`, or to its end.

    Only that window is read from disk. Fewer samples come back when the window runs past the end.
    Raises AudioReadError when the file cannot be decoded.
    """
    start = round(offset_seconds * file.sample_rate)
    frames = -1 if seconds is None else math.ceil(seconds * file.sample_rate)
    try:
        with _quiet_decoder(file.path):
            audio, _ = sf.read(file.path, start=start, frames=frames, dtype="float32", always_2d=True)  # (N, C)
    except _DECODE_ERRORS as error:
        raise AudioReadError(_unreadable_message(file.path, error)) from error
    mono = audio.mean(axis=1)  # (N,)
    if file.sample_rate != sample_rate:
        mono = soxr.resample(mono, file.sample_rate, sample_rate, quality="HQ")
    if seconds is not None:
        mono = mono[: round(seconds * sample_rate)]
    return np.ascontiguousarray(mono, dtype=np.float32)


def is_silent(audio: np.ndarray) -> bool:
    return not audio.size or float(np.abs(audio).max()) < SILENCE_PEAK


def is_finite(audio: np.ndarray) -> bool:
    """Every sample is a finite number within MAX_AMPLITUDE (usable as sound)."""
    return bool(np.isfinite(audio).all()) and (not audio.size or float(np.abs(audio).max()) <= MAX_AMPLITUDE)
