"""The ``eval`` job: how well a (pruned) encoder's frozen features classify the user's labelled
audio, with a SUPERB-style probe (``speechprune.eval.probe``), and how close it stays to its teacher.

Reading order: check every option (nothing read yet), read what the model (and teacher) is from
config files, scan the labelled folders, pick and split the clips and read their audio, then
load weights, compute pooled features and fit the probes. Every problem with the options or the
data is found before any weights load. The report is a ``report.EvalReport`` (schema in docs/eval.md).

With ``--quantize`` or ``--runtime onnxruntime`` the model probed is the deployed one (torch
dynamic int8, or an ONNX Runtime session of a checked export with hidden states, float32 or ORT
int8), and the float32 torch model is the reference its hidden states are compared with.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .. import __version__
from ..checks import check_positive
from ..deploy.onnx import OnnxEncoder, check_runtime, deployed_session, require_onnx
from ..deploy.quantize import check_scheme, describe as describe_quantization, quantize
from ..errors import DataError, UsageError
from ..folders.target import Target, check_teacher, load_target, model_fields, read_target
from ..io.audio import AUDIO_EXTENSIONS, AudioFile, AudioReadError, SkipCounts, is_finite, load_audio, scan_reported
from ..io.outputs import check_output, write_json_file
from ..io.progress import Reporter
from ..model.compare import compare_hidden_states, require_finite
from ..model.device import resolve_device
from ..model.spec import min_samples
from .features import FrozenFeatures, batch_groups, clip_batches
from .probe import fit_classifier
from .report import EvalReport

DEFAULT_TEST_FRACTION = 0.25
LAYOUT_HINT = "pass a folder with one subfolder of audio files per label (FOLDER/<label>/*.wav)"


@dataclass
class EvalOptions:
    model: str
    data: str
    test_data: str | None = None
    test_fraction: float | None = None  # None: 0.25 without test_data
    teacher: str | None = None
    max_per_class: int | None = None  # at most this many clips per label, in data and in test_data
    max_seconds_per_clip: float = 4.0  # longer clips keep their centre
    batch_seconds: float = 32.0  # padded audio per forward pass
    epochs: int = 200
    lr: float = 1e-2
    weight_decay: float = 1e-4
    per_layer: bool = True  # also fit one probe per hidden state alone
    seed: int = 0
    device: str = "auto"  # model.device.resolve_device
    out: str | None = None
    quantize: str | None = None  # probe the model quantized by this scheme (speechprune.deploy.quantize)
    runtime: str = "torch"  # or "onnxruntime": probe a checked ONNX export with hidden states (speechprune.deploy.onnx)


@dataclass
class Labelled:
    """A labelled folder as scanned: usable files per label (labels sorted), what was skipped."""

    source: str
    files: dict[str, list[AudioFile]]
    skipped: SkipCounts = field(default_factory=SkipCounts)
    loose_files: int = 0  # audio files directly in the folder, outside every label folder (ignored)


@dataclass
class Clips:
    audio: list[np.ndarray] = field(default_factory=list)  # (T,) float32 at the model's rate
    labels: list[int] = field(default_factory=list)  # indices into the class list

    def seconds(self, rate: int) -> float:
        return round(sum(len(a) for a in self.audio) / rate, 3)


def check_options(options: EvalOptions):
    """Refuse bad options before anything is read or loaded; returns the device."""
    if options.test_data is not None and options.test_fraction is not None:
        raise UsageError("give --test-data or --test-fraction, not both: --test-data is the test set, "
                         "--test-fraction holds out part of --data")
    fraction = options.test_fraction
    if fraction is not None and not (0 < fraction < 1):
        raise UsageError(f"--test-fraction must be between 0 and 1 (exclusive), got {fraction:g}")
    check_positive(options.max_seconds_per_clip, "--max-seconds-per-clip")
    check_positive(options.batch_seconds, "--batch-seconds")
    if options.epochs < 1:
        raise UsageError(f"--epochs must be at least 1, got {options.epochs}")
    if options.max_per_class is not None and options.max_per_class < 1:
        raise UsageError(f"--max-per-class must be at least 1, got {options.max_per_class}")
    if options.out is not None:
        check_output(options.out, "--out", {"MODEL": options.model, "--data": options.data,
                                            "--test-data": options.test_data, "--teacher": options.teacher}, folder=False)
    device = resolve_device(options.device, cpu_only=options.quantize is not None or options.runtime != "torch")
    check_scheme(options.quantize, device)
    check_runtime(options.runtime, device)
    if options.runtime != "torch":
        require_onnx()
    return device


# --- data -------------------------------------------------------------------------------------


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
        for reason, count in corpus.skipped.to_dict().items():
            for _ in range(count):
                labelled.skipped.add(reason)
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


def prepare_data(options: EvalOptions, target: Target, reporter: Reporter):
    """(train clips, test clips, classes, the report's data section), all before any weights load."""
    rng = np.random.default_rng(options.seed)
    shortest = min_samples(target.spec)
    min_seconds = shortest / target.sampling_rate
    train_set = scan_labelled(options.data, "--data", reporter, min_labels=2, min_seconds=min_seconds)
    classes = list(train_set.files)
    files = {label: _cap(items, options.max_per_class, rng) for label, items in train_set.files.items()}
    skipped = train_set.skipped
    loose = train_set.loose_files
    if options.test_data is None:
        fraction = DEFAULT_TEST_FRACTION if options.test_fraction is None else options.test_fraction
        train_files, test_files = split_by_class(files, fraction, rng)
        if not any(test_files.values()):
            raise DataError(f"--data {options.data} has a single clip per label: nothing to hold out for testing; "
                            "add clips (2 or more per label) or pass --test-data")
        split = {"method": "stratified", "test_fraction": fraction}
    else:
        test_set = scan_labelled(options.test_data, "--test-data", reporter, min_labels=1, min_seconds=min_seconds)
        unknown = [label for label in test_set.files if label not in classes]
        if unknown:
            raise DataError(f"--test-data {options.test_data} has labels that --data lacks: {', '.join(unknown)}; "
                            f"the probe can only answer {', '.join(classes)}")
        train_files = files
        test_files = {label: _cap(test_set.files.get(label, []), options.max_per_class, rng) for label in classes}
        for reason, count in test_set.skipped.to_dict().items():
            for _ in range(count):
                skipped.add(reason)
        loose += test_set.loose_files
        split = {"method": "test-data", "test_fraction": None}
    if loose:
        reporter.warning(f"{loose} audio file(s) lie directly in the data folder(s), outside any label folder: ignored")
    reporter.message(f"reading {sum(map(len, train_files.values()))} training and "
                     f"{sum(map(len, test_files.values()))} test clips")
    train = read_clips(train_files, classes, target.sampling_rate, options.max_seconds_per_clip, shortest, skipped)
    test = read_clips(test_files, classes, target.sampling_rate, options.max_seconds_per_clip, shortest, skipped)
    empty = [label for i, label in enumerate(classes) if i not in set(train.labels)]
    if empty:
        raise DataError(f"label(s) {', '.join(empty)} kept no readable training clip; add audio to their folders")
    if not test.audio:
        raise DataError("no readable test clip; add audio (2 or more clips per label) or pass --test-data")
    per_class = {label: {"train": train.labels.count(i), "test": test.labels.count(i)} for i, label in enumerate(classes)}
    data = {
        "source": train_set.source,
        "test_source": None if options.test_data is None else str(Path(options.test_data).expanduser()),
        "split": split,
        "classes": classes,
        "train_clips": len(train.audio),
        "test_clips": len(test.audio),
        "per_class": per_class,
        "seconds": {"train": train.seconds(target.sampling_rate), "test": test.seconds(target.sampling_rate)},
        "max_seconds_per_clip": options.max_seconds_per_clip,
        "max_per_class": options.max_per_class,
        "skipped": skipped.to_dict(),
    }
    return train, test, classes, data


# --- probing ----------------------------------------------------------------------------------


def _probe(net, masks, target: Target, clips: list[np.ndarray], n_train: int, train: Clips, test: Clips,
           classes: list[str], options: EvalOptions, device, reporter: Reporter, who: str) -> tuple[dict, int, int]:
    """(probe section, forward passes, classifier fits) for one model: pooled features of every clip,
    one probe over all hidden states, and with per_layer one probe per state."""
    passes = len(batch_groups([len(c) for c in clips], batch_seconds=options.batch_seconds,
                              sampling_rate=target.sampling_rate, same_length=not target.attention_mask))
    reporter.message(f"{who}: features of {len(clips)} clips in {passes} forward pass(es)")
    features = FrozenFeatures(net, attention_mask=target.attention_mask, normalize=target.normalize,
                              sampling_rate=target.sampling_rate, masks=masks, batch_seconds=options.batch_seconds,
                              device=device, progress=reporter.message).pooled(clips)  # (N, L + 1, D)
    require_finite(features, f"{who} {options.teacher if who == 'teacher' else options.model}")
    train_x, test_x = features[:n_train], features[n_train:]
    fit = {"classes": classes, "seed": options.seed, "epochs": options.epochs, "lr": options.lr,
           "weight_decay": options.weight_decay}
    reporter.message(f"{who}: fitting the probe ({options.epochs} epochs)")
    section = {"probe": fit_classifier(train_x, train.labels, test_x, test.labels, **fit).to_dict(),
               "per_layer_accuracy": None, "best_layer": None}
    fits = 1
    if options.per_layer:
        reporter.message(f"{who}: fitting one probe per hidden state ({features.shape[1]})")
        accuracy = [fit_classifier(train_x[:, k : k + 1], train.labels, test_x[:, k : k + 1], test.labels, **fit).accuracy
                    for k in range(features.shape[1])]
        fits += len(accuracy)
        best = int(np.argmax(accuracy))
        section["per_layer_accuracy"] = accuracy
        section["best_layer"] = {"state": best, "accuracy": accuracy[best]}
    return section, passes, fits


def _test_batches(test: Clips, target: Target, batch_seconds: float, same_length: bool | None = None) -> list:
    """The test clips in padded batches as ``target`` takes them (equal lengths unless it uses a padding mask)."""
    same_length = not target.attention_mask if same_length is None else same_length
    return [batch for _, batch in clip_batches(test.audio, batch_seconds=batch_seconds, sampling_rate=target.sampling_rate,
                                               normalize=target.normalize, same_length=same_length)]


def ran_as(scheme: str | None, runtime: str) -> str:
    """How the evaluated model ran, in a few words: "int8", "onnxruntime float32", "onnxruntime int8"."""
    return scheme if runtime == "torch" else f"{runtime} {scheme or 'float32'}"


def evaluate(options: EvalOptions, reporter: Reporter | None = None) -> dict:
    reporter = reporter or Reporter()
    started = time.perf_counter()
    device = check_options(options)
    target = read_target(options.model)
    if options.runtime != "torch" and target.kind == "run":
        raise UsageError(f"--runtime {options.runtime} takes models, not prune runs: shrink {options.model} first")
    teacher_target = read_target(options.teacher) if options.teacher else None
    if teacher_target is not None:
        check_teacher(target, teacher_target)
    train, test, classes, data = prepare_data(options, target, reporter)
    clips = train.audio + test.audio
    seconds = {"read_audio": round(time.perf_counter() - started, 3)}

    reporter.message(f"loading {options.model} ({target.kind})")
    mark = time.perf_counter()
    net, masks, _ = load_target(target, device)
    floats, graph = None, None
    if options.runtime == "onnxruntime":  # the ORT model is the one evaluated; float32 torch is the reference
        reporter.message(f"exporting {options.model} with hidden states for ONNX Runtime (or checking its model.onnx)")
        runner, graph = deployed_session(target, net, threads=torch.get_num_threads(), quantize=options.quantize,
                                         hidden_states=True, attention_mask=target.attention_mask)
        floats, net = net, OnnxEncoder(runner, net.spec)
    elif options.quantize:  # the quantized model is the one evaluated; its float32 self is the reference
        floats, net = net, quantize(net, options.quantize)
    seconds["load"] = round(time.perf_counter() - mark, 3)
    mark = time.perf_counter()
    section, forward, fits = _probe(net, masks, target, clips, len(train.audio), train, test, classes, options,
                                    device, reporter, "model")
    seconds["probe"] = round(time.perf_counter() - mark, 3)
    spec = net.spec
    report = EvalReport(
        speechprune=__version__,
        **model_fields(options.model, target, spec),
        seed=options.seed,
        data=data,
        **section,
        teacher=None,
        runtime=options.runtime,
        quantization=None,
        method={
            "features": "per clip and hidden state (0 = input of layer 1, k = output of layer k): mean over real "
                        "frames of layer_norm(h) per frame, no affine; frozen encoder",
            "probe": "softmax(w) weighted sum over the hidden states (w = 0 at start) -> linear layer; cross-entropy, "
                     "Adam, full batch up to 4096 clips",
            "epochs": options.epochs,
            "lr": options.lr,
            "weight_decay": options.weight_decay,
            "batch_seconds": options.batch_seconds,
            "chance": "test accuracy of always answering the most common training label",
        },
        passes={"student_forward": forward, "teacher_forward": 0, "float32_forward": 0, "classifier_fits": fits},
        time_seconds=seconds,
    )
    if floats is not None:
        mark = time.perf_counter()
        reporter.message(f"comparing the hidden states of the {ran_as(options.quantize, options.runtime)} model "
                         "with float32 torch")
        fidelity = compare_hidden_states(net, floats, _test_batches(test, target, options.batch_seconds),
                                         student_mask=target.attention_mask, teacher_mask=target.attention_mask,
                                         device=device, student_masks=masks, teacher_masks=masks)
        passes = fidelity.pop("passes")
        report.passes["student_forward"] += passes["student_forward"]
        report.passes["float32_forward"] = passes["teacher_forward"]
        report.quantization = {"scheme": options.quantize, "runtime": options.runtime,
                               "quantized": describe_quantization(options.quantize, options.runtime), "graph": graph,
                               "fidelity": {**fidelity, "clips": len(test.audio)}}
        seconds["quantization"] = round(time.perf_counter() - mark, 3)
    if teacher_target is not None:
        mark = time.perf_counter()
        reporter.message(f"loading teacher {options.teacher} ({teacher_target.kind})")
        teacher, _, _ = load_target(teacher_target, device)
        teacher_section, teacher_forward, teacher_fits = _probe(
            teacher, None, teacher_target, clips, len(train.audio), train, test, classes, options, device, reporter,
            "teacher")
        # hidden-state fidelity on the test clips, both models fed the student's input
        both_masked = target.attention_mask and teacher_target.attention_mask
        batches = _test_batches(test, target, options.batch_seconds, same_length=not both_masked)
        fidelity = compare_hidden_states(net, teacher, batches, student_mask=target.attention_mask,
                                         teacher_mask=teacher_target.attention_mask, device=device,
                                         student_masks=masks, progress=reporter.message)
        fidelity_passes = fidelity.pop("passes")
        report.teacher = {"model": options.teacher, "kind": teacher_target.kind, **teacher_section,
                          "fidelity": {**fidelity, "clips": len(test.audio)}}
        report.passes["student_forward"] += fidelity_passes["student_forward"]
        report.passes["teacher_forward"] = teacher_forward + fidelity_passes["teacher_forward"]
        report.passes["classifier_fits"] += teacher_fits
        seconds["teacher"] = round(time.perf_counter() - mark, 3)
    seconds["total"] = round(time.perf_counter() - started, 3)
    result = report.to_dict()
    if options.out:
        write_json_file(options.out, "--out", result)
        reporter.message(f"saved {options.out}")
    return result
