"""The ``analyze`` job: what each attention head does and how much the model needs it, what a
prune run kept, and how close a student stays to its teacher.

Reading order: check every option (nothing loaded yet), read what the model (and teacher) is
from config files and scan the audio, then load weights and compute. Head statistics live in
``heads``, student-teacher similarity in ``speechprune.model.compare``; this module picks the
audio, loads models, and assembles the report (``report.AnalyzeReport``, schema in docs/analyze.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .. import __version__
from ..checks import MAX_PROJECTIONS, check_count, check_fits_in_memory, check_long_enough, check_positive, check_seed
from ..errors import DataError, UsageError
from ..folders.target import Target, check_teacher, load_target, model_fields, read_target
from ..io.audio import AudioCorpus, scan_reported
from ..io.batches import validation_batches
from ..io.outputs import check_output, holding, write_json_file
from ..io.progress import Reporter
from ..method.accounting import component_totals, kept_structure, parameter_breakdown, pruned_spec, spec_parameter_count
from ..method.gates import GateLayout, GateValues, HardConcreteGates, gate_dict
from ..method.macs import macs
from ..model.compare import compare_hidden_states, require_finite
from ..model.device import resolve_device
from ..model.memory import FLOAT_BYTES
from .heads import head_statistics
from .report import AnalyzeReport

STAT_KEYS = ("drop_one", "grad_importance", "entropy", "mean_distance", "contribution_norm", "contribution_ratio")


@dataclass
class AnalyzeOptions:
    model: str
    data: str | None = None
    max_seconds: float = 120.0
    crop_seconds: float = 4.0  # each file contributes its first crop_seconds (attention spans one crop)
    batch_seconds: float = 16.0
    projections: int = 4  # random projections per batch for the gradient importance
    drop_one: bool = True
    teacher: str | None = None
    seed: int = 0
    device: str = "auto"  # model.device.resolve_device
    png: str | None = None
    out: str | None = None


def check_options(options: AnalyzeOptions) -> torch.device:
    """Refuse bad options before anything is read or loaded."""
    check_positive(options.max_seconds, "--max-seconds")
    check_positive(options.crop_seconds, "--crop-seconds")
    check_positive(options.batch_seconds, "--batch-seconds")
    check_count(options.projections, "--projections", most=MAX_PROJECTIONS)
    check_seed(options.seed)
    if options.teacher and not options.data:
        raise UsageError("--teacher needs --data: the audio to compare the two models on")
    if options.png is not None and not options.png.lower().endswith(".png"):
        raise UsageError(f"--png takes a .png file name, got {options.png}")
    for option, path in (("--out", options.out), ("--png", options.png)):
        if path is None:
            continue
        check_output(path, option, {"MODEL": options.model, "--data": options.data, "--teacher": options.teacher},
                     folder=False, kind="png" if option == "--png" else "json")
    if options.png is not None:
        from .plot import require_matplotlib

        require_matplotlib()
    return resolve_device(options.device)


def pick_audio(data: str, options: AnalyzeOptions, target: Target, reporter: Reporter):
    """(batches, description): whole crops of seeded randomly chosen files, at most --max-seconds in all."""
    corpus = scan_reported(data, reporter, min_seconds=0.1)
    crop = min(options.crop_seconds, options.max_seconds)
    order = np.random.default_rng(options.seed).permutation(len(corpus.files))
    chosen, total = [], 0.0
    for i in order:
        seconds = min(corpus.files[i].seconds, crop)
        if total + seconds > options.max_seconds + 1e-9:
            continue
        chosen.append(corpus.files[i])
        total += seconds
    batches = validation_batches(AudioCorpus(chosen, corpus.skipped, corpus.source), sample_rate=target.sampling_rate,
                                 crop_seconds=crop, batch_seconds=options.batch_seconds, normalize=target.normalize)
    if not batches:
        raise DataError(f"no usable audio in {data}: every chosen file was unreadable or silent")
    seconds = sum(b.seconds for b in batches)
    return batches, {"source": corpus.source, "files": len(chosen), "seconds": round(seconds, 3),
                     "crop_seconds": crop, "batches": len(batches), "skipped": corpus.skipped.to_dict()}


def run_report(snap) -> dict:
    """What a prune run keeps: keep probabilities, kept structure, removed blocks, parameters."""
    record = snap.record
    checkpoint = snap.run.latest_checkpoint()
    gates = HardConcreteGates(snap.layout, ste=record.ste)
    with torch.no_grad():
        gates.log_alpha.copy_(checkpoint.tensors("gates")["log_alpha"])
        keep_probability = gates.keep_probability()
    spec = snap.spec
    ones = GateValues(snap.layout, torch.ones(snap.layout.size, dtype=torch.float64))
    binary = GateValues(snap.layout, (snap.values > 0).double())
    dense_parts, pruned_parts = parameter_breakdown(spec, ones), parameter_breakdown(spec, binary)
    kept = kept_structure(spec, GateValues(snap.layout, snap.values))
    removed = [{"layer": l, "block": block} for l, layer in enumerate(kept["layers"])
               for block in ("attention", "ffn") if not layer[block]]
    by_layer = []
    for l in range(len(spec.layers)):
        entry = {"layer": l}
        for name, parts in (("dense", dense_parts), ("pruned", pruned_parts)):
            entry[f"attention_{name}"] = int(round(float(parts[f"attention.{l}"])))
            entry[f"ffn_{name}"] = int(round(float(parts[f"ffn.{l}"])))
            entry[name] = entry[f"attention_{name}"] + entry[f"ffn_{name}"]
        by_layer.append(entry)
    dense_totals, pruned_totals = component_totals(dense_parts), component_totals(pruned_parts)
    # MACs for the run's reference input (--macs-seconds, batch 1), as the shrunk model runs
    seconds = record.macs_seconds
    samples = round(seconds * record.audio.sampling_rate)
    dense_macs, pruned_macs = macs(spec, samples), macs(pruned_spec(spec, binary), samples)
    return {
        "run_dir": str(snap.run.root),
        "finished": snap.finished,
        "step": snap.step,
        "structures": list(snap.layout.kinds),
        "ste": record.ste,
        "params_dense": sum(dense_totals.values()),
        "params_pruned": sum(pruned_totals.values()),
        "params_by_component": {"dense": dense_totals, "pruned": pruned_totals},
        "params_by_layer": by_layer,
        "budgets": record.budgets,
        "macs_seconds": seconds,
        "macs_dense": dense_macs["total"],
        "macs_pruned": pruned_macs["total"],
        "macs_by_component": {"dense": dense_macs, "pruned": pruned_macs},
        "kept": kept,
        "removed_blocks": removed,
        "keep_probability": gate_dict(snap.layout, keep_probability),
    }


def analyze(options: AnalyzeOptions, reporter: Reporter | None = None) -> dict:
    reporter = reporter or Reporter()
    device = check_options(options)
    with holding({"--out": options.out, "--png": options.png}):  # a second analyze on them is refused now
        return _analyze(options, device, reporter)


def _check_crops(options: AnalyzeOptions, target) -> None:
    """Before loading: a crop makes a frame, and a batch of crops fits in memory with its gradients."""
    crop_option = "--crop-seconds" if options.crop_seconds <= options.max_seconds else "--max-seconds"
    crop = min(options.crop_seconds, options.max_seconds)
    check_long_enough(crop, crop_option, options.model, target.spec, target.sampling_rate)
    check_fits_in_memory(options.model, target.spec, target.sampling_rate, length=(crop_option, crop),
                         count=("--batch-seconds", options.batch_seconds), per_input=crop, training=True,
                         weight_bytes=2 * FLOAT_BYTES * spec_parameter_count(target.spec),  # weights and gradients
                         what="one pass with gradients")


def _analyze(options: AnalyzeOptions, device: torch.device, reporter: Reporter) -> dict:
    target = read_target(options.model)
    if options.data is None and target.kind != "run":
        raise DataError(f"{options.model} is a model: pass --data with a folder (or manifest) of speech to analyze it on "
                        "(only a prune run folder can be analyzed without audio)")
    _check_crops(options, target)
    teacher_target = read_target(options.teacher) if options.teacher else None
    if teacher_target is not None:
        check_teacher(target, teacher_target)
    batches, audio = pick_audio(options.data, options, target, reporter) if options.data else (None, None)

    reporter.message(f"loading {options.model} ({target.kind})")
    net, base_masks, snap = load_target(target, device)
    spec = net.spec
    layout = GateLayout(spec)
    report = AnalyzeReport(speechprune=__version__, **model_fields(options.model, target, spec), seed=options.seed,
                           audio=audio, method=None, heads=None, gate_scores=None,
                           run=run_report(snap) if snap is not None else None, teacher=None)
    if batches is not None:
        heads = sum(len(layer.heads) if layer.attention else 0 for layer in spec.layers)
        n = len(batches)
        reporter.message(
            f"{audio['seconds']:.1f} s of audio in {n} batch(es): {n} forward pass(es) with gradients, "
            f"{n * options.projections} backward pass(es)"
            + (f", {n * heads} partial forwards for drop-one" if options.drop_one else "")
        )
        stats = head_statistics(net, batches, layout=layout, base_masks=base_masks, projections=options.projections,
                                seed=options.seed, drop_one=options.drop_one, use_attention_mask=target.attention_mask,
                                device=device, progress=reporter.message)
        scores = stats.pop("gate_importance")
        require_finite(scores, f"{options.model}")
        passes = stats.pop("passes")
        report.heads = stats
        report.gate_scores = gate_dict(layout, scores)
        report.method = {
            "projections": options.projections,
            "drop_one": "relative L2 change ||h' - h|| / ||h|| over real frames, head masked alone" if options.drop_one else None,
            "grad_importance": "mean over batches and projections r of (d<r, h_L>/dz_i)^2 / ||h_L||^2 at z = 1",
            "passes": passes,
        }
    if teacher_target is not None:
        reporter.message(f"loading teacher {options.teacher} ({teacher_target.kind})")
        teacher, _, _ = load_target(teacher_target, device)
        report.teacher = {"model": options.teacher, **compare_hidden_states(
            net, teacher, batches, student_mask=target.attention_mask, teacher_mask=teacher_target.attention_mask,
            student_masks=base_masks, device=device, progress=reporter.message)}
    result = report.to_dict()
    if options.out:
        write_json_file(options.out, "--out", result)
        reporter.message(f"saved {options.out}")
    if options.png:
        from .plot import save_png

        save_png(result, options.png)
        reporter.message(f"saved {options.png}")
    return result
