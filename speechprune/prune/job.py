"""The ``prune`` job: gated distillation of an encoder down to its budgets (parameters, MACs,
predicted latency).

Reading order: ``prune`` checks everything that is cheap (options, model config, run
folder, audio) before it loads any weights, then hands over to ``Pruning``, whose ``run``
is the training loop: a pruning phase (gates, weights and Lagrange multipliers trained
together while the target ramps up), the decision that lands on the budget, and an optional
final phase that distils with the masks frozen.
"""

from __future__ import annotations

import contextlib
import copy
import json
import platform
import signal
import threading
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .. import __version__
from ..checks import check_long_enough
from ..errors import DataError, DiskFullError, SpeechpruneError
from ..folders.run import RUN_FORMAT, RunFolder
from ..io import atomic
from ..io.audio import scan_audio
from ..io.batches import CropSampler, split_validation, validation_batches
from ..io.outputs import OutputLock, check_output
from ..io.progress import Reporter
from ..method.accounting import component_totals, dense_count, kept_structure, parameter_breakdown, parameter_count
from ..method.budget import Budget, macs_budget, params_budget
from ..method.decision import binding, decide, lands, one_shot_ranking
from ..method.distill import DistillHeads, distill_loss
from ..method.gates import INIT_LOG_ALPHA, GateLayout, GateValues, HardConcreteGates, gate_flat
from ..method.latency import CostTable, check_architecture, latency_budget
from ..method.macs import macs, pruned_macs
from ..model.device import Distributed, autocast, check_precision, resolve_device
from ..model.encoder import Encoder
from ..model.loading import LoadedEncoder, ModelInfo, describe_source, inspect_model, load_encoder
from .config import PruneConfig

GRAD_CLIP = 10.0
MAX_SKIPPED_IN_A_ROW = 20  # non-finite steps in a row before the run stops (its checkpoint is still good)
WARM_START_REMOVED = 0.5  # --init-from-scores: log_alpha of structures the one-shot decision removes


class Interrupted(SpeechpruneError):
    """Ctrl-C or SIGTERM: a checkpoint was saved, the run can be resumed."""

    exit_code = 130


def prune(config: PruneConfig, reporter: Reporter | None = None) -> dict:
    """Run (or resume) a pruning job and return its summary."""
    reporter = reporter or Reporter()
    config.validate()
    check_output(config.out, "--out", {"MODEL": config.model, "--data": config.data, "--scores": config.scores},
                 folder=True)
    ranks = Distributed.from_env()
    try:  # one writer per run folder: rank 0 holds its lock (the other ranks write nothing)
        with OutputLock(config.out) if ranks.is_main else contextlib.nullcontext():
            return _prune(config, reporter, ranks)
    except DiskFullError as error:
        error.rerun = "rerun with --resume"
        raise


def _prune(config: PruneConfig, reporter: Reporter, ranks: Distributed) -> dict:
    device = resolve_device(config.device, ranks.local_rank)
    check_precision(config.precision, device)

    info = inspect_model(config.model, config.revision)
    config.resolve(len(info.spec.layers))
    layout = GateLayout(info.spec, config.structures)
    table = read_latency_table(config, info) if config.latency_table else None
    budgets = build_budgets(config, info.spec, layout, info.sampling_rate, table)
    for budget in budgets:
        budget.check_reachable(layout, config.structures)
    # before the run folder exists: a crop that makes no frame would crash the run mid-way
    check_long_enough(config.crop_seconds, "--crop-seconds", config.model, info.spec, info.sampling_rate)
    scores = read_scores(config.scores, layout) if config.scores else None

    run = RunFolder(config.out)
    plan = run.plan(run_options(config, ranks.world_size), resume=config.resume, overwrite=config.overwrite)
    if plan != "fresh":
        run.check_budgets(budget_records(budgets))
    if plan == "finished":
        reporter.message(f"{run.root} is a finished run; nothing to do")
        return run.read_json(run.summary_path)
    if ranks.is_main:
        run.remove_stale_temporaries()

    corpus = scan_audio(config.data, min_seconds=config.min_seconds, warn=reporter.warning)
    train, val = split_validation(corpus, fraction=config.val_fraction, max_files=config.val_max_files, seed=config.seed)
    if len(train.files) < ranks.world_size:
        raise DataError(
            f"{len(train.files)} training files for {ranks.world_size} processes; every process needs at least one file"
        )
    reporter.message(
        f"audio: {len(corpus.files)} files, {corpus.seconds / 3600:.2f} h from {config.data}"
        + (f" (skipped {corpus.skipped.describe()})" if corpus.skipped.total else "")
        + f"; {len(val.files)} held out for validation"
    )

    loaded = load_encoder(info)
    reporter.message(describe_source(loaded))
    if plan == "resume":
        run.check_source(loaded.weights_sha256)

    ranks.init(device)
    try:
        job = Pruning(config, loaded, layout, budgets, run, ranks, device, reporter, train, val)
        if plan == "resume":
            job.load_checkpoint()
        else:
            job.start(corpus, scores)
        return job.run(corpus)
    finally:
        ranks.close()


def build_budgets(config: PruneConfig, spec, layout: GateLayout, sampling_rate: int,
                  table: CostTable | None = None) -> list[Budget]:
    """The run's budgets, in a fixed order (parameters, MACs, latency); at least one."""
    budgets = []
    if config.sparsity is not None:
        budgets.append(params_budget(spec, layout, config.sparsity, config.tolerance))
    if config.macs_sparsity is not None:
        samples = reference_samples(config, sampling_rate)
        budgets.append(macs_budget(spec, layout, config.macs_sparsity, samples, config.tolerance))
    if config.speedup is not None:
        budgets.append(latency_budget(table, spec, layout, config.speedup, config.tolerance))
    return budgets


def read_latency_table(config: PruneConfig, info: ModelInfo) -> CostTable:
    """--latency-table, refused unless it was measured for this model's architecture."""
    table = CostTable.read(config.latency_table)
    check_architecture(table, info.spec, info.sampling_rate, config.model)
    return table


def budget_records(budgets: list[Budget]) -> dict:
    """What config.json keeps of each budget; a resumed run must have the same (a latency
    budget's table is named by the hash of its content)."""
    return {b.name: {"option": b.option, "sparsity": b.sparsity, "dense": b.dense, **b.record} for b in budgets}


def run_options(config: PruneConfig, world_size: int) -> dict:
    """The options that define the run's result, as config.json keeps them: a resumed run must have the same."""
    return {**config.result_defining(), "world_size": world_size}


def reference_samples(config: PruneConfig, sampling_rate: int) -> int:
    return round(config.reference_seconds * sampling_rate)


def read_scores(path: str, layout: GateLayout) -> torch.Tensor:
    """(N,) structure scores from `speechprune analyze` output (higher: more worth keeping)."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise DataError(f"cannot read --scores {path}: {error}; pass the JSON written by speechprune analyze --out")
    if not isinstance(data, dict) or "gate_scores" not in data:
        raise DataError(f"--scores {path} has no gate_scores; write it with speechprune analyze MODEL --out FILE")
    try:
        return gate_flat(layout, data["gate_scores"])
    except ValueError as error:
        raise DataError(f"--scores {path} does not fit this model ({error}); analyze the same model") from None


def step_seed(seed: int, step: int, rank: int) -> int:
    return int(np.random.SeedSequence([seed, step, rank]).generate_state(1)[0])


def _untrained_parameters(student: Encoder, last_distilled: int) -> list[str]:
    """Parameters no distillation loss reaches (DDP requires every trained parameter to get a gradient).

    ``masked_spec_embed`` serves only SpecAugment, which distillation never applies; layers
    after the last distilled hidden state, and the final LayerNorm of pre-LN models, do not
    feed any distilled state, so they stay as the teacher has them.
    """
    names = []
    for name, _ in student.named_parameters():
        parts = name.split(".")
        if name == "masked_spec_embed":
            names.append(name)
        elif parts[:2] == ["encoder", "layers"] and int(parts[2]) >= last_distilled:
            names.append(name)
        elif parts[:2] == ["encoder", "layer_norm"] and student.spec.stable_layer_norm:
            names.append(name)
    return names


class GatedStudent(nn.Module):
    """Student encoder + its gates + distillation heads: one module, so DDP syncs them together."""

    def __init__(self, student: Encoder, gates: HardConcreteGates, heads: DistillHeads, weights: list[float]):
        super().__init__()
        self.student = student
        self.gates = gates
        self.heads = heads
        self.weights = weights

    def forward(self, waveforms, attention_mask, teacher_states, frame_mask, gate_values=None, generator=None):
        z = gate_values if gate_values is not None else self.gates.sample(generator)
        masks = self.gates.layout.values(z).masks()
        out = self.student(waveforms, attention_mask, masks)
        total, pairs = distill_loss(out.hidden_states, teacher_states, self.heads, self.weights, frame_mask)
        return total, torch.stack(pairs).detach()


def build_student(teacher: Encoder, layout: GateLayout, config: PruneConfig) -> GatedStudent:
    """The trainable copy of ``teacher`` with its gates and distillation heads."""
    student = copy.deepcopy(teacher).train().requires_grad_(True)
    for name in _untrained_parameters(student, max(config.distill_layers)):
        student.get_parameter(name).requires_grad_(False)
    gates = HardConcreteGates(layout, ste=config.ste)
    heads = DistillHeads(teacher.spec.hidden_size, config.distill_layers)
    return GatedStudent(student, gates, heads, config.distill_weights)


def build_optimizers(model: GatedStudent, lambdas: torch.Tensor, config: PruneConfig):
    """(trained weights, their optimizer with the gate logits as a second group, the multipliers' optimizer)."""
    weights = [p for n, p in model.named_parameters() if not n.startswith("gates.") and p.requires_grad]
    optimizer = torch.optim.AdamW(
        [
            {"params": weights, "lr": config.lr, "weight_decay": 0.0},
            {"params": [model.gates.log_alpha], "lr": config.gate_lr, "weight_decay": 0.0},
        ]
    )
    return weights, optimizer, torch.optim.Adam([lambdas], lr=config.lambda_lr, maximize=True)


def lagrangian_term(budgets: list[Budget], gates: HardConcreteGates, lambdas: torch.Tensor, ramp: float):
    """(sum over budgets of lambda1 gap + lambda2 gap^2, expected sparsity per budget (B,)),
    gap = expected sparsity (from the keep probabilities) - the budget's target at this point
    of the ramp.

    Every budget has its own multiplier pair (row of ``lambdas``, (B, 2)). Sets ``lambdas.grad``
    to d term / d lambda = (gap, gap^2) per row, which the multipliers' optimizer climbs
    (maximize=True); the term itself only sends gradients to the gates.
    """
    values = gates.layout.values(gates.keep_probability())
    sparsity = torch.stack([budget.expected_sparsity(values) for budget in budgets])  # (B,)
    gap = sparsity - torch.tensor([budget.sparsity * ramp for budget in budgets], dtype=sparsity.dtype,
                                  device=sparsity.device)
    lambdas.grad = torch.stack([gap.detach(), gap.detach() ** 2], dim=1).to(lambdas.dtype)
    term = (lambdas[:, 0].detach() * gap + lambdas[:, 1].detach() * gap**2).sum()
    return term, sparsity


def metric_prefix(budget: Budget) -> str:
    """Metric and summary keys of a budget: "sparsity" for parameters, "macs_sparsity" for MACs."""
    return "" if budget.name == "params" else f"{budget.name}_"


class Pruning:
    """The state of one pruning run and its training loop."""

    def __init__(self, config, loaded: LoadedEncoder, layout, budgets: list[Budget], run, ranks, device, reporter,
                 train, val):
        self.config = config
        self.info = loaded.info
        self.loaded = loaded
        self.spec = loaded.info.spec
        self.layout = layout
        self.budgets = budgets
        self.run_folder = run
        self.ranks = ranks
        self.device = device
        self.reporter = reporter

        self.teacher = loaded.encoder.to(device).eval().requires_grad_(False)
        torch.manual_seed(config.seed)
        self.model = build_student(self.teacher, layout, config).to(device)
        self.gates = self.model.gates
        self.lambdas = torch.zeros(len(budgets), 2, device=device, requires_grad=True)  # (lambda1, lambda2) per budget
        self.weight_params, self.optimizer, self.lambda_optimizer = build_optimizers(self.model, self.lambdas, config)
        self.scaler = torch.amp.GradScaler(device.type, enabled=config.precision == "fp16")

        audio = dict(sample_rate=self.info.sampling_rate, crop_seconds=config.crop_seconds, normalize=self.info.normalize)
        self.sampler = CropSampler(
            train, batch_seconds=config.batch_seconds, seed=config.seed, rank=ranks.rank, world_size=ranks.world_size,
            warn=reporter.warning, **audio
        )
        self.val_batches = validation_batches(val, batch_seconds=config.batch_seconds, **audio) if ranks.is_main else []

        self.step = 0
        self.keep: torch.Tensor | None = None  # final decision (bool, (N,)) once the pruning phase is over
        self.adjusted = 0  # gates the decision flipped against 1[log_alpha > 0] (all removed ones, one-shot)
        self.elapsed = 0.0
        self.last_val: float | None = None
        self.interrupted = False
        self.skipped_steps = 0  # steps whose loss or gradients were not finite: the weights were left alone
        self.skipped_in_a_row = 0

    # --- setup -------------------------------------------------------------------------------

    def start(self, corpus, scores: torch.Tensor | None = None) -> None:
        if scores is not None:
            self._start_gates_from(scores)
        if self.ranks.is_main:
            record = {
                "format": RUN_FORMAT,
                "speechprune": __version__,
                "torch": torch.__version__,
                "transformers": _transformers_version(),
                "python": platform.python_version(),
                "options": run_options(self.config, self.ranks.world_size),
                "all_options": self.config.to_dict(),
                "source": {
                    "model": self.info.source,
                    "revision": self.info.revision,
                    "commit": self.loaded.commit,
                    "weights_sha256": self.loaded.weights_sha256,
                    "family": self.info.family.name,
                    "architecture": self.info.architecture,
                    "taken": describe_source(self.loaded),
                    "left_out": self.loaded.left_out,
                },
                "audio": {
                    "sampling_rate": self.info.sampling_rate,
                    "normalize": self.info.normalize,
                    "attention_mask": self.info.use_attention_mask,
                    "files": len(corpus.files),
                    "hours": round(corpus.seconds / 3600, 4),
                },
                "gates": {"structures": self.layout.kinds, "count": self.layout.size, "ste": self.config.ste},
                "params_dense": dense_count(self.spec, self.layout),
                "budgets": budget_records(self.budgets),
            }
            self.run_folder.start_fresh(record, self.spec, self.info.config.to_dict())
        self.ranks.barrier()

    def _start_gates_from(self, scores: torch.Tensor) -> None:
        """One-shot (--steps 0): the gates hold the ranking the budget decision uses, importance
        per unit of the binding budget (``one_shot_ranking``). Warm start (--init-from-scores):
        the structures the one-shot decision would remove start nearly undecided (keep
        probability sigmoid(0.5) = 0.62), the rest clearly on."""
        ranking = one_shot_ranking(self.layout, self.budgets, scores)
        with torch.no_grad():
            if self.config.steps == 0:
                self.gates.log_alpha.copy_(ranking)
                return
            everything = torch.ones(self.layout.size, dtype=torch.bool)
            keep = decide(self.layout, self.budgets, ranking, initial=everything).keep.to(self.device)
            self.gates.log_alpha.copy_(torch.where(keep, INIT_LOG_ALPHA, WARM_START_REMOVED))

    def load_checkpoint(self) -> None:
        checkpoint = self.run_folder.latest_checkpoint()
        self.model.student.load_state_dict(checkpoint.tensors("student"))
        self.model.heads.load_state_dict(checkpoint.tensors("distill_heads"))
        gates = checkpoint.tensors("gates")
        with torch.no_grad():
            self.gates.log_alpha.copy_(gates["log_alpha"])
            self.lambdas.copy_(gates["lambdas"].view_as(self.lambdas))  # 0.1.0 runs saved (2,)
        saved = checkpoint.torch_state()
        self.optimizer.load_state_dict(saved["optimizer"])
        self.lambda_optimizer.load_state_dict(saved["lambda_optimizer"])
        self.scaler.load_state_dict(saved["scaler"])
        torch.set_rng_state(saved["rng"])
        if "keep" in gates:
            self.keep = gates["keep"].bool().to(self.device)
        state = checkpoint.state
        self.step = state["step"]
        self.elapsed = state["elapsed"]
        self.last_val = state.get("val_distill")
        self.adjusted = state.get("decision_adjusted", 0)
        self.skipped_steps = state.get("skipped_steps", 0)
        self.sampler.load_state_dict(state["sampler"])
        if self.ranks.is_main:
            self.run_folder.truncate_metrics(self.step)
        self.reporter.message(f"resuming {self.run_folder.root} from step {self.step}")

    # --- the loop ------------------------------------------------------------------------------

    def run(self, corpus) -> dict:
        config = self.config
        total = config.steps + config.final_steps
        # Ctrl-C / SIGTERM handling needs the main thread (signal handlers can only be set there)
        catch = threading.current_thread() is threading.main_thread()
        previous = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)} if catch else {}
        try:
            while self.step < total:
                phase = "prune" if self.step < config.steps else "final"
                self._run_phase(phase, config.steps if phase == "prune" else total)
            if self.keep is None:
                self._decide()
            if self.step == 0 and self.ranks.is_main:  # one-shot: the run's only checkpoint
                self._save_checkpoint("prune")
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
        return self._finish(corpus)

    def _run_phase(self, phase: str, end: int) -> None:
        config = self.config
        if phase == "final" and self.keep is None:
            self._decide()
        self.gates.log_alpha.requires_grad_(phase == "prune")
        model = self.model
        if self.ranks.enabled:  # gradients of weights and gates are averaged across ranks
            model = nn.parallel.DistributedDataParallel(self.model, broadcast_buffers=False)
        start = config.steps if phase == "final" else 0
        self.reporter.start(phase, end - start, self.step - start)
        try:
            while self.step < end:
                self.step += 1
                metrics = self._train_step(model, phase)
                stop = self.ranks.any(self.interrupted)
                due = self.step % config.checkpoint_every == 0 or self.step == end or stop
                if due:
                    metrics["val_distill"] = self._validate_and_save(phase)
                if self.ranks.is_main:
                    path = self.run_folder.metrics_path
                    with atomic.disk_full_names(path), path.open("a") as handle:
                        handle.write(atomic.dumps(metrics, indent=None) + "\n")
                self.reporter.update(self.step, metrics)
                if stop:
                    raise Interrupted(
                        f"interrupted at step {self.step}; checkpoint saved in {self.run_folder.root}, "
                        "continue with the same command plus --resume"
                    )
        finally:
            self.reporter.finish()

    def _teacher_pass(self, batch):
        """(waveforms, padding mask for the model or None, teacher output, real-frame mask) of a batch."""
        waveforms = batch.waveforms.to(self.device)
        padding = batch.attention_mask.to(self.device)
        model_mask = padding if self.info.use_attention_mask else None
        with torch.no_grad(), autocast(self.config.precision, self.device):
            teacher = self.teacher(waveforms, model_mask)
        return waveforms, model_mask, teacher, self.teacher.frame_mask(padding, teacher.last_hidden_state.shape[1])

    def _train_step(self, model: nn.Module, phase: str) -> dict:
        config, step = self.config, self.step
        tick = time.perf_counter()
        batch = self.sampler.batch(step)
        waveforms, model_mask, teacher, frame_mask = self._teacher_pass(batch)

        local_step = step - config.steps if phase == "final" else step
        lr = config.weight_lr(local_step, phase)
        self.optimizer.param_groups[0]["lr"] = lr
        metrics = {"step": step, "phase": phase}
        with autocast(config.precision, self.device):
            if phase == "prune":
                generator = torch.Generator().manual_seed(step_seed(config.seed, step, self.ranks.rank))
                distill, pairs = model(waveforms, model_mask, teacher.hidden_states, frame_mask, generator=generator)
            else:
                distill, pairs = model(waveforms, model_mask, teacher.hidden_states, frame_mask, self.final_values)
        loss = distill.float()
        if phase == "prune":
            ramp = config.ramp(step)
            lagrangian, expected = lagrangian_term(self.budgets, self.gates, self.lambdas, ramp)
            loss = loss + lagrangian
            metrics["lagrangian"] = lagrangian.item()
            for budget, sparsity, (lambda1, lambda2) in zip(self.budgets, expected.tolist(), self.lambdas.tolist()):
                prefix = metric_prefix(budget)
                metrics.update({
                    f"expected_{prefix}sparsity": round(sparsity, 6),
                    f"target_{prefix}sparsity": round(budget.sparsity * ramp, 6),
                    f"{prefix}lambda1": lambda1,
                    f"{prefix}lambda2": lambda2,
                })

        self.optimizer.zero_grad(set_to_none=True)
        # A non-finite loss or gradient never reaches the weights: the step is skipped and counted.
        # Gradients are averaged across ranks, so only the loss needs the ranks to agree. With fp16
        # the loss scaler already skips steps with inf gradients (and lowers its scale): its business.
        finite = not self.ranks.any(not bool(torch.isfinite(loss)))
        if finite:
            self.scaler.scale(loss).backward()
            self.scaler.unscale_(self.optimizer)
            norm = torch.nn.utils.clip_grad_norm_(self.weight_params, GRAD_CLIP)
            gate_grad = self.gates.log_alpha.grad
            finite = self.scaler.is_enabled() or (
                bool(torch.isfinite(norm)) and (gate_grad is None or bool(torch.isfinite(gate_grad).all())))
            if finite:
                self.scaler.step(self.optimizer)
                self.scaler.update()
                if phase == "prune":
                    self.lambda_optimizer.step()
        self._count_skipped(finite, metrics)

        seconds = time.perf_counter() - tick
        self.elapsed += seconds
        metrics.update(
            loss=loss.item(),
            distill=distill.item(),
            distill_layers={str(l): round(v, 6) for l, v in zip(config.distill_layers, pairs.tolist())},
            lr=lr,
            gate_lr=config.gate_lr if phase == "prune" else 0.0,
            audio_seconds_per_second=round(batch.seconds * self.ranks.world_size / seconds, 2),
            step_seconds=round(seconds, 4),
        )
        return metrics

    def _count_skipped(self, finite: bool, metrics: dict) -> None:
        if finite:
            self.skipped_in_a_row = 0
            return
        self.skipped_steps += 1
        self.skipped_in_a_row += 1
        metrics["skipped"] = True
        self.reporter.warning(f"step {self.step}: the loss or its gradients are not finite (NaN or inf); step skipped")
        if self.skipped_in_a_row >= MAX_SKIPPED_IN_A_ROW:
            raise DataError(
                f"the loss was not finite for {MAX_SKIPPED_IN_A_ROW} steps in a row (up to step {self.step}); "
                f"the weights were left untouched and the checkpoint in {self.run_folder.root} is good: "
                "check --data for broken audio or lower --lr, then rerun with --resume"
            )

    # --- decisions, validation, checkpoints --------------------------------------------------

    def _decide(self) -> None:
        # one-shot: the gates hold a ranking, not a trained decision, so the decision starts from
        # keeping everything and removes by rank
        initial = torch.ones(self.layout.size, dtype=torch.bool) if self.config.steps == 0 else None
        decision = decide(self.layout, self.budgets, self.gates.log_alpha, initial)
        self.keep = decision.keep.to(self.device)
        self.adjusted = decision.adjusted
        if decision.adjusted and self.config.steps:
            self.reporter.message(
                f"budget: adjusted {decision.adjusted} of {self.layout.size} gate decisions by log_alpha rank "
                "to land on the target"
            )
        if not decision.within_tolerance:
            costs = ", ".join(b.amount(cost) for b, cost in zip(self.budgets, decision.costs.values()))
            self.reporter.warning(
                f"the gated structures are too coarse to land within {self.config.tolerance:.1%} of the target; "
                f"closest is {costs}"
            )

    @property
    def final_values(self) -> torch.Tensor:
        return self.gates.deterministic(self.keep)

    def _validate_and_save(self, phase: str) -> float | None:
        val = None
        if self.ranks.is_main:
            values = self.final_values if self.keep is not None else self.gates.deterministic()
            val = self._validation_loss(values)
            self.last_val = val
            self._save_checkpoint(phase)
        self.ranks.barrier()
        return val

    def _validation_loss(self, gate_values: torch.Tensor) -> float | None:
        if not self.val_batches:
            return None
        total, weight = 0.0, 0.0
        masks = self.layout.values(gate_values).masks()
        with torch.no_grad(), autocast(self.config.precision, self.device):
            for batch in self.val_batches:
                waveforms, model_mask, teacher, frame_mask = self._teacher_pass(batch)
                student = self.model.student(waveforms, model_mask, masks)
                loss, _ = distill_loss(
                    student.hidden_states, teacher.hidden_states, self.model.heads, self.config.distill_weights, frame_mask
                )
                frames = float(frame_mask.sum())
                total += loss.item() * frames
                weight += frames
        return round(total / max(weight, 1.0), 6)

    def _save_checkpoint(self, phase: str) -> None:
        gates = {"log_alpha": self.gates.log_alpha, "lambdas": self.lambdas}
        if self.keep is not None:
            gates["keep"] = self.keep.to(torch.uint8)
        self.run_folder.save_checkpoint(
            self.step,
            phase,
            tensors={
                "student": self.model.student.state_dict(),
                "gates": gates,
                "distill_heads": self.model.heads.state_dict(),
            },
            torch_state={
                "optimizer": self.optimizer.state_dict(),
                "lambda_optimizer": self.lambda_optimizer.state_dict(),
                "scaler": self.scaler.state_dict(),
                "rng": torch.get_rng_state(),
            },
            state={
                "step": self.step,
                "phase": phase,
                "elapsed": self.elapsed,
                "val_distill": self.last_val,
                "decision_adjusted": self.adjusted,
                "skipped_steps": self.skipped_steps,
                "sampler": self.sampler.state_dict(),
            },
        )

    def _on_signal(self, signum, frame) -> None:
        if self.interrupted:  # a second Ctrl-C stops at once
            raise KeyboardInterrupt
        self.interrupted = True
        self.reporter.warning("stopping after this step and saving a checkpoint (Ctrl-C again to abort at once)")

    # --- the end -----------------------------------------------------------------------------

    def _finish(self, corpus) -> dict:
        if not self.ranks.agree([self.gates.log_alpha, self.lambdas, *self.model.parameters()]):
            raise RuntimeError("ranks ended with different gates or weights; distributed training went out of sync")
        values = self.final_values.detach().cpu().double()
        keep = GateValues(self.layout, values)
        binary = GateValues(self.layout, (values > 0).double())
        params = int(round(parameter_count(self.spec, binary).item()))
        if self.config.final_steps == 0 or self.last_val is None:
            self.last_val = self._validation_loss(self.final_values) if self.ranks.is_main else None
        ones = GateValues(self.layout, torch.ones(self.layout.size, dtype=torch.float64))
        dense = dense_count(self.spec, self.layout)
        samples = reference_samples(self.config, self.info.sampling_rate)
        macs_dense, macs_pruned = macs(self.spec, samples)["total"], pruned_macs(self.spec, binary, samples)
        costs = {b.name: b.exact(binary) for b in self.budgets}
        budgets = {b.name: b.summary(costs[b.name]) for b in self.budgets}
        latency = next((b for b in self.budgets if b.name == "latency"), None)  # predictions need its table
        predicted = costs.get("latency")
        params_target = budgets.get("params", {}).get("target")
        summary = {
            "run_dir": str(self.run_folder.root),
            "model": self.info.source,
            "family": self.info.family.name,
            "params_dense": dense,
            "params_pruned": params,
            "sparsity": round(1 - params / dense, 6),
            "target_sparsity": self.config.sparsity,
            "target_params": params_target,
            "target_miss": round(params / params_target - 1, 6) if params_target else None,
            "macs_seconds": self.config.reference_seconds,
            "macs_dense": macs_dense,
            "macs_pruned": macs_pruned,
            "macs_sparsity": round(1 - macs_pruned / macs_dense, 6),
            "target_macs_sparsity": self.config.macs_sparsity,
            "predicted_ms_dense": round(latency.dense, 3) if latency else None,
            "predicted_ms_pruned": round(predicted, 3) if latency else None,
            "predicted_speedup": round(latency.dense / predicted, 4) if latency else None,
            "budgets": budgets,
            "binding_budget": binding(self.budgets, costs).name,
            "within_tolerance": lands(self.budgets, costs),
            "decision_adjusted": self.adjusted,
            "decision_adjusted_share": round(self.adjusted / max(self.layout.size, 1), 6),
            "steps": self.step,
            "skipped_steps": self.skipped_steps,
            "final_steps": self.config.final_steps,
            "world_size": self.ranks.world_size,
            "val_distill": self.last_val,
            "params_by_component": {
                "dense": component_totals(parameter_breakdown(self.spec, ones)),
                "pruned": component_totals(parameter_breakdown(self.spec, binary)),
            },
            "kept": kept_structure(self.spec, keep),
            "audio": {"files": len(corpus.files), "hours": round(corpus.seconds / 3600, 4),
                      "skipped": self.sampler.skipped.to_dict()},
            "train_seconds": round(self.elapsed, 1),
        }
        if self.ranks.is_main:
            atomic.write_safetensors(
                self.run_folder.masks_path,
                {"keep": (values > 0).to(torch.uint8), "values": values.float()},
                metadata={"structures": ",".join(self.layout.kinds), "ste": str(self.config.ste)},
            )
            atomic.write_json(self.run_folder.summary_path, summary)
        self.ranks.barrier()
        return summary


def _transformers_version() -> str:
    import transformers

    return transformers.__version__


def summary_line(summary: dict) -> str:
    # .get: summaries of runs finished before latency budgets lack these keys
    targets = ", ".join(f"{b['option']} {b.get('option_value', b['target_sparsity']):g}" for b in summary["budgets"].values())
    latency = ""
    if summary.get("predicted_speedup") is not None:
        latency = (f", predicted {summary['predicted_ms_dense']:.1f} -> {summary['predicted_ms_pruned']:.1f} ms "
                   f"(speedup {summary['predicted_speedup']:.2f}x)")
    return (
        f"{summary['params_dense'] / 1e6:.2f}M -> {summary['params_pruned'] / 1e6:.2f}M parameters "
        f"(sparsity {summary['sparsity']:.3f}), {summary['macs_dense'] / 1e9:.2f} -> {summary['macs_pruned'] / 1e9:.2f} "
        f"GMACs per {summary['macs_seconds']:g} s (MACs sparsity {summary['macs_sparsity']:.3f}){latency}; "
        f"targets {targets}; {summary['steps']} steps; "
        f"run saved in {summary['run_dir']}"
    )


