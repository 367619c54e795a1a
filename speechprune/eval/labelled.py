"""The labelled audio ``eval`` probes with: one subfolder of audio files per label, scanned,
capped, split into training and test clips and read at the model's rate, all before any weights
load (``prepare_data``; the report's data section is in docs/eval.md)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import DataError
from ..folders.target import Target
from ..io.audio import AUDIO_EXTENSIONS, AudioFile, AudioReadError, SkipCounts, is_finite, load_audio, scan_reported
from ..io.progress import Reporter
from ..model.spec import min_samples
from .options import EvalOptions

DEFAULT_TEST_FRACTION = 0.25
LAYOUT_HINT = "pass a folder with one subfolder of audio files per label (FOLDER/<label>/*.wav)"


@dataclass
class Labelled:
    """A labelled folder as scanned: usable files per label (labels sorted), what was skipped."""

    source: str
    files: dict[str, list[AudioFile]]
    skipped: SkipCounts = field(default_factory=SkipCounts)
    loose_files: int = 0  # audio files directly in the folder, outside every label folder (ignored)

    def add_skipped(self, skipped: SkipCounts) -> None:
        for reason, count in skipped.to_dict().items():
            for _ in range(count):
                self.skipped.add(reason)


@dataclass
class Clips:
    audio: list[np.ndarray] = field(default_factory=list)  # (T,) float32 at the model's rate
    labels: list[int] = field(default_factory=list)  # indices into the class list

    def seconds(self, rate: int) -> float:
        return round(sum(len(a) for a in self.audio) / rate, 3)


@dataclass
class LabelledData:
    """What the probes train and test on, and the report's data section."""

    train: Clips
    test: Clips
    classes: list[str]
    section: dict


def scan_labelled(source: str, option: str, reporter: Reporter, *, min_labels: int, min_seconds: float) -> Labelled:
    """The usable audio of each immediate subfolder of ``source`` (searched recursively inside).

    Subfolders whose names start with "." or "_" (like Speech Commands' _background_noise_) are
    not labels. Every label folder needs at least one usable file.
    """
    folder = Path(source).expanduser()
    if not folder.exists():
        raise DataError(f"{option} {source} does not exist; {LAYOUT_HINT}")
    if not folder.is_dir():
        raise DataError(f"{option} {source} is not a folder; {LAYOUT_HINT}")
    subfolders = sorted((d for d in folder.iterdir() if d.is_dir() and not d.name.startswith((".", "_"))),
                        key=lambda d: d.name)
    if len(subfolders) < min_labels:
        found = ", ".join(d.name for d in subfolders) or "none"
        raise DataError(f"{option} {source} has {len(subfolders)} label folder(s) ({found}); a classification "
                        f"probe needs at least {min_labels}: {LAYOUT_HINT}")
    labelled = Labelled(str(folder), {})
    labelled.loose_files = sum(1 for f in folder.iterdir() if f.is_file() and f.name.lower().endswith(AUDIO_EXTENSIONS))
    for sub in subfolders:
        try:
            corpus = scan_reported(sub, reporter, min_seconds=min_seconds)
        except DataError:
            raise DataError(f"label folder {sub} has no usable audio (wav/flac/ogg/mp3 of at least {min_seconds:.3g} s, "
                            "not silent); add some or remove the folder") from None
        labelled.files[sub.name] = corpus.files
        labelled.add_skipped(corpus.skipped)
    return labelled


def _cap(files: list[AudioFile], limit: int | None, rng: np.random.Generator) -> list[AudioFile]:
    """At most ``limit`` files, chosen by ``rng``, kept in path order."""
    if limit is None or len(files) <= limit:
        return list(files)
    keep = sorted(rng.choice(len(files), size=limit, replace=False).tolist())
    return [files[i] for i in keep]


def split_by_class(files: dict[str, list[AudioFile]], fraction: float, rng: np.random.Generator):
    """(train, test) per label: round(fraction x n) test files, at least 1 and at most n - 1 when a
    label has 2 or more; a label with 1 file keeps it for training."""
    train, test = {}, {}
    for label, items in files.items():
        n = len(items)
        n_test = min(max(round(fraction * n), 1), n - 1) if n >= 2 else 0
        held = set(rng.permutation(n)[:n_test].tolist())
        train[label] = [f for i, f in enumerate(items) if i not in held]
        test[label] = [f for i, f in enumerate(items) if i in held]
    return train, test


def read_clips(files: dict[str, list[AudioFile]], classes: list[str], rate: int, seconds: float, shortest: int,
               skipped: SkipCounts) -> Clips:
    """Mono float32 at ``rate``; a file longer than ``seconds`` keeps its centre ``seconds``.

    Files that fail to decode, come out shorter than the model's receptive field, or hold NaN or
    infinite samples are skipped and counted in ``skipped``.
    """
    clips = Clips()
    for label, items in files.items():
        for file in items:
            offset = max(file.seconds - seconds, 0.0) / 2
            try:
                audio = load_audio(file, rate, offset_seconds=offset, seconds=seconds)
            except AudioReadError:
                skipped.add("unreadable")
                continue
            if len(audio) < shortest:
                skipped.add("too_short")
                continue
            if not is_finite(audio):
                skipped.add("non_finite")
                continue
            clips.audio.append(audio)
            clips.labels.append(classes.index(label))
    return clips


def _held_out(options: EvalOptions, files: dict, rng: np.random.Generator) -> tuple[dict, dict, dict]:
    """(train files, test files, split section): part of every label of --data held out."""
    fraction = DEFAULT_TEST_FRACTION if options.test_fraction is None else options.test_fraction
    train_files, test_files = split_by_class(files, fraction, rng)
    if not any(test_files.values()):
        raise DataError(f"--data {options.data} has a single clip per label: nothing to hold out for testing; "
                        "add clips (2 or more per label) or pass --test-data")
    return train_files, test_files, {"method": "stratified", "test_fraction": fraction}


def _test_folder(options: EvalOptions, train_set: Labelled, reporter: Reporter, rng: np.random.Generator,
                 min_seconds: float) -> tuple[dict, dict]:
    """(test files, split section) from --test-data, whose skipped and loose files count in ``train_set``'s."""
    classes = list(train_set.files)
    test_set = scan_labelled(options.test_data, "--test-data", reporter, min_labels=1, min_seconds=min_seconds)
    unknown = [label for label in test_set.files if label not in classes]
    if unknown:
        raise DataError(f"--test-data {options.test_data} has labels that --data lacks: {', '.join(unknown)}; "
                        f"the probe can only answer {', '.join(classes)}")
    test_files = {label: _cap(test_set.files.get(label, []), options.max_per_class, rng) for label in classes}
    train_set.add_skipped(test_set.skipped)
    train_set.loose_files += test_set.loose_files
    return test_files, {"method": "test-data", "test_fraction": None}


def prepare_data(options: EvalOptions, target: Target, reporter: Reporter) -> LabelledData:
    """The training and test clips of --data (and --test-data), read as ``target`` takes them."""
    rng = np.random.default_rng(options.seed)
    rate, shortest = target.sampling_rate, min_samples(target.spec)
    train_set = scan_labelled(options.data, "--data", reporter, min_labels=2, min_seconds=shortest / rate)
    classes = list(train_set.files)
    files = {label: _cap(items, options.max_per_class, rng) for label, items in train_set.files.items()}
    if options.test_data is None:
        train_files, test_files, split = _held_out(options, files, rng)
    else:
        train_files = files
        test_files, split = _test_folder(options, train_set, reporter, rng, shortest / rate)
    if train_set.loose_files:
        reporter.warning(f"{train_set.loose_files} audio file(s) lie directly in the data folder(s), outside any "
                         "label folder: ignored")
    reporter.message(f"reading {sum(map(len, train_files.values()))} training and "
                     f"{sum(map(len, test_files.values()))} test clips")
    skipped = train_set.skipped
    train = read_clips(train_files, classes, rate, options.max_seconds_per_clip, shortest, skipped)
    test = read_clips(test_files, classes, rate, options.max_seconds_per_clip, shortest, skipped)
    empty = [label for i, label in enumerate(classes) if i not in set(train.labels)]
    if empty:
        raise DataError(f"label(s) {', '.join(empty)} kept no readable training clip; add audio to their folders")
    if not test.audio:
        raise DataError("no readable test clip; add audio (2 or more clips per label) or pass --test-data")
    section = {
        "source": train_set.source,
        "test_source": None if options.test_data is None else str(Path(options.test_data).expanduser()),
        "split": split,
        "classes": classes,
        "train_clips": len(train.audio),
        "test_clips": len(test.audio),
        "per_class": {label: {"train": train.labels.count(i), "test": test.labels.count(i)}
                      for i, label in enumerate(classes)},
        "seconds": {"train": train.seconds(rate), "test": test.seconds(rate)},
        "max_seconds_per_clip": options.max_seconds_per_clip,
        "max_per_class": options.max_per_class,
        "skipped": skipped.to_dict(),
    }
    return LabelledData(train, test, classes, section)
