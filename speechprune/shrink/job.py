"""The ``shrink`` job: a run folder in, a smaller model folder out, with proof that it is equal.

Reading order: check the options and the output folder (nothing loaded yet), read the run,
slice the student, check the slice (its parameter count against the analytic one, its
outputs against the masked model), optionally measure fidelity to the dense teacher on real
audio, then write the folder atomically.
"""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import torch

from ..checks import check_positive
from ..deploy.onnx import ONNX_FILE, export_onnx, require_onnx
from ..errors import ModelError, SpeechpruneError
from ..folders.run import RunFolder, RunSnapshot, read_run
from ..folders.shrunk import check_output_folder, stock_compatible, write_model_folder
from ..io.audio import AudioCorpus, scan_reported
from ..io.batches import validation_batches
from ..io.outputs import OutputLock, check_output
from ..io.progress import Reporter
from ..method.accounting import parameter_count
from ..model.device import check_precision_name, dtype_name
from ..model.encoder import Encoder
from ..model.families import family_by_name
from .card import model_card
from .report import ShrinkReport
from .slicing import max_relative_error, shrink_encoder

EXACTNESS_LIMIT = 1e-4  # max relative error of shrunk vs masked outputs (float32)


def shrink_run(
    run_dir: str | Path,
    out: str | Path,
    *,
    dtype: str = "float32",
    data: str | None = None,
    fidelity_seconds: float = 20.0,
    overwrite: bool = False,
    onnx: bool = False,
    command: str | None = None,
    reporter: Reporter | None = None,
) -> dict:
    """Write the shrunk model of ``run_dir`` to ``out`` and return its report (``ShrinkReport.to_dict``)."""
    reporter = reporter or Reporter()
    dtype = dtype_name(dtype)
    check_precision_name(dtype, "--dtype")
    check_positive(fidelity_seconds, "--fidelity-seconds")
    if onnx:
        require_onnx()
    out = check_output(out, "--out", {"RUN": run_dir, "--data": data, "the run's source model": _source_model(run_dir)},
                       folder=True, overwrite=overwrite)  # a link: its target
    corpus = scan_reported(data, reporter, min_seconds=0.5) if data else None  # a bad --data fails before the slicing
    with OutputLock(out):
        return _shrink_run(run_dir, out, dtype, corpus, fidelity_seconds, overwrite, onnx, command, reporter)


def _source_model(run_dir: str | Path) -> str | None:
    """The teacher a run was pruned from, as its config.json names it (None when unreadable)."""
    try:
        return RunFolder(run_dir).record().source.model
    except SpeechpruneError:
        return None


def _shrink_run(run_dir, out: Path, dtype, corpus, fidelity_seconds, overwrite, onnx, command, reporter) -> dict:
    check_output_folder(out, overwrite)
    snap = read_run(run_dir)
    if not snap.finished:
        reporter.warning(f"{run_dir} is not finished: shrinking its checkpoint at step {snap.step}")
    teacher = _teacher(snap) if corpus else None  # before the slicing: a changed source model fails at once
    spec, state = shrink_encoder(snap.spec, snap.state, snap.layout, snap.values)
    params, small, error = _checked(snap, spec, state)
    reporter.message(f"shrunk {snap.record.params_dense:,} -> {params:,} parameters; max relative error vs masked {error:.1e}")

    fidelity = _fidelity(snap, small, teacher, corpus, fidelity_seconds, reporter) if corpus else None
    stock = _stock_export(snap, spec, state) if stock_compatible(spec, snap.spec) else None
    if stock is not None:
        reporter.message("the result fits a stock transformers config: also written to stock/ (no remote code needed)")

    report = ShrinkReport(
        model_dir=str(out),
        run_dir=str(snap.run.root),
        run_step=snap.step,
        run_finished=snap.finished,
        family=snap.spec.family,
        source_model=snap.record.source.model,
        params_dense=snap.record.params_dense,
        params=params,
        sparsity=round(1 - params / snap.record.params_dense, 6),
        dtype=dtype,
        max_relative_error_vs_masked=error,
        fidelity_cosine=fidelity,
        stock_config=stock is not None,
    )

    def write_onnx(folder: Path) -> None:  # into the folder before it moves into place: all or nothing
        reporter.message("exporting model.onnx and checking it with ONNX Runtime")
        audio = snap.record.audio
        written = export_onnx(small, folder / ONNX_FILE, attention_mask=audio.attention_mask,
                              sampling_rate=audio.sampling_rate)
        report.onnx = {"file": ONNX_FILE, "inputs": written["inputs"], "outputs": written["outputs"],
                          "max_relative_error": written["max_relative_error"]}

    write_model_folder(
        out,
        spec,
        state,
        dtype=dtype,
        card=model_card(snap, spec, report, command),
        provenance=report.provenance(),
        preprocessor=snap.record.audio.to_preprocessor(),
        stock=stock,
        overwrite=overwrite,
        extra=write_onnx if onnx else None,
    )
    report.file_bytes = (out / "model.safetensors").stat().st_size
    return report.to_dict()


def _checked(snap: RunSnapshot, spec, state: dict) -> tuple[int, Encoder, float]:
    """(parameters, the shrunk encoder, its max relative error against the masked one) of the
    sliced ``spec`` and ``state``, which must store the parameters the accounting counts and
    compute what the masked model computes (a RuntimeError otherwise: a bug, not a user error)."""
    params = sum(t.numel() for k, t in state.items() if not _is_buffer(k))
    analytic = int(parameter_count(snap.spec, snap.layout.values((snap.values > 0).double())).item())
    if params != analytic:
        raise RuntimeError(f"shrunk model stores {params} parameters but accounting says {analytic}")
    dense = Encoder(snap.spec).eval()
    dense.load_state_dict(snap.state)
    small = Encoder(spec).eval()
    small.load_state_dict(state)
    masks = snap.layout.values(snap.values).masks()
    error = max_relative_error(dense, masks, small, snap.record.audio.sampling_rate)
    if not error <= EXACTNESS_LIMIT:  # NaN fails too
        raise RuntimeError(f"shrunk model differs from the masked one by {error:.2e} (limit {EXACTNESS_LIMIT})")
    return params, small, error


def _is_buffer(key: str) -> bool:
    return "running_" in key or key.endswith("num_batches_tracked")


def _stock_export(snap: RunSnapshot, spec, state) -> tuple[dict, dict]:
    config = snap.run.read_json(snap.run.source_config_path)
    config["intermediate_size"] = spec.layers[0].ffn_dim
    config["architectures"] = [family_by_name(spec.family).base_class]
    return config, family_by_name(spec.family).to_hf_keys(state)


def _teacher(snap: RunSnapshot) -> Encoder:
    """The dense model the run was pruned from, for ``--data``'s fidelity: refused when its
    weights are not the ones the run recorded (their sha256)."""
    from ..model.loading import inspect_model, load_encoder

    source = snap.record.source
    loaded = load_encoder(inspect_model(source.model, source.revision))
    snap.run.check_source(loaded.weights_sha256, use="measure the fidelity of",
                          fix="restore the weights the run was pruned from, or shrink without --data")
    return loaded.encoder


def _fidelity(snap: RunSnapshot, small: Encoder, teacher: Encoder, corpus: AudioCorpus, seconds: float,
              reporter: Reporter) -> dict:
    """Cosine similarity, per distilled layer, of the shrunk model's hidden states to the teacher's."""
    audio = snap.record.audio
    crop = min(4.0, seconds)
    corpus = replace(corpus, files=corpus.files[: max(1, round(seconds / crop))])
    batches = validation_batches(corpus, sample_rate=audio.sampling_rate, crop_seconds=crop,
                                 batch_seconds=seconds, normalize=audio.normalize)
    source = snap.record.source
    layers = snap.record.options["distill_layers"]
    sums = {layer: 0.0 for layer in layers}
    frames = 0.0
    with torch.no_grad():
        for batch in batches:
            mask = batch.attention_mask if audio.attention_mask else None
            expected, got = teacher(batch.waveforms, mask), small(batch.waveforms, mask)
            real = teacher.frame_mask(batch.attention_mask, expected.last_hidden_state.shape[1]).float()
            for layer in layers:
                cos = torch.nn.functional.cosine_similarity(got.hidden_states[layer], expected.hidden_states[layer], dim=-1)
                sums[layer] += float((cos * real).sum())
            frames += float(real.sum())
    reporter.message(f"fidelity on {sum(b.seconds for b in batches):.1f} s of {corpus.source}")
    if not all(math.isfinite(total) for total in sums.values()):
        raise ModelError(
            f"the shrunk model or its teacher {source.model} gives NaN or infinite hidden states on "
            f"{corpus.source}; their weights are damaged: prune again from intact weights"
        )
    return {str(layer): round(total / max(frames, 1.0), 4) for layer, total in sums.items()}
