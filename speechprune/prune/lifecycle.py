"""The life of one pruning run around its steps: start or resume, the loop of the pruning phase,
the decision that lands on the budgets, the final phase with the masks frozen, checkpoints and
validation on the way, Ctrl-C and SIGTERM, and the files of the end (``records``)."""

from __future__ import annotations

import signal
import threading
import time
from dataclasses import InitVar, dataclass

import torch
from torch import nn

from ..errors import DataError, SpeechpruneError
from ..folders.run import RunFolder
from ..io import atomic
from ..io.audio import AudioCorpus
from ..io.batches import CropSampler, validation_batches
from ..io.prefetch import Prefetcher
from ..io.progress import Reporter
from ..method.budget import Budget
from ..method.decision import decide, one_shot_ranking
from ..method.widths import WidthRule, round_widths
from ..method.distill import distill_loss
from ..method.gates import INIT_LOG_ALPHA, GateLayout
from ..model.device import autocast
from ..model.loading import LoadedEncoder, ModelInfo
from ..model.spec import EncoderSpec
from . import records
from .config import PruneConfig
from .distributed import Distributed
from .step import TeacherBatch, build_optimizers, build_student, teacher_pass, train_step

MAX_SKIPPED_IN_A_ROW = 20  # non-finite steps in a row before the run stops (its checkpoint is still good)
WARM_START_REMOVED = 0.5  # --init-from-scores: log_alpha of structures the one-shot decision removes


class Interrupted(SpeechpruneError):
    """Ctrl-C or SIGTERM: a checkpoint was saved, the run can be resumed."""

    exit_code = 130


@dataclass(eq=False)
class Pruning:
    """The state of one pruning run, its loop of steps (``step.train_step``) and what the run
    writes: config.json at the start, checkpoints and metrics.jsonl on the way, masks and
    summary.json at the end. Made by ``job.prune`` from what it has checked and loaded: the
    fields below; the training and validation audio only build the batches."""

    config: PruneConfig
    loaded: LoadedEncoder  # the source model: the teacher, and the student's starting weights
    layout: GateLayout
    budgets: list[Budget]
    rounding: WidthRule | None  # where the decision's widths land (--round-to); None: where the gates put them
    run_folder: RunFolder
    ranks: Distributed
    device: torch.device
    reporter: Reporter
    train: InitVar[AudioCorpus]
    val: InitVar[AudioCorpus]

    @property
    def info(self) -> ModelInfo:
        return self.loaded.info

    @property
    def spec(self) -> EncoderSpec:
        return self.info.spec

    def __post_init__(self, train: AudioCorpus, val: AudioCorpus) -> None:
        config, device = self.config, self.device
        self.teacher = self.loaded.encoder.to(device).eval().requires_grad_(False)
        torch.manual_seed(config.seed)
        self.model = build_student(self.teacher, self.layout, config).to(device)
        self.gates = self.model.gates
        self.lambdas = torch.zeros(len(self.budgets), 2, device=device, requires_grad=True)  # (lambda1, lambda2) per budget
        self.optimizers = build_optimizers(self.model, self.lambdas, config, device)

        audio = dict(sample_rate=self.info.audio.sampling_rate, crop_seconds=config.crop_seconds,
                     normalize=self.info.audio.normalize)
        self.sampler = CropSampler(
            train, batch_seconds=config.batch_seconds, seed=config.seed, rank=self.ranks.rank,
            world_size=self.ranks.world_size, warn=self.reporter.warning, **audio
        )
        self.batches = Prefetcher(self.sampler, last_step=config.steps + config.final_steps,
                                  ahead=1 if config.prefetch else 0)
        self.val_batches = (validation_batches(val, batch_seconds=config.batch_seconds, **audio) if self.ranks.is_main
                            else [])

        self.step = 0
        self.keep: torch.Tensor | None = None  # final decision (bool, (N,)) once the pruning phase is over
        self.adjusted = 0  # gates the decision flipped against 1[log_alpha > 0] (all removed ones, one-shot)
        self.rounded_widths = 0  # widths --round-to moved
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
            record = records.config_record(self, corpus)
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
        self.optimizers.optimizer.load_state_dict(saved["optimizer"])
        self.optimizers.multipliers.load_state_dict(saved["lambda_optimizer"])
        self.optimizers.scaler.load_state_dict(saved["scaler"])
        torch.set_rng_state(saved["rng"])
        if "keep" in gates:
            self.keep = gates["keep"].bool().to(self.device)
        state = checkpoint.state
        self.step = state["step"]
        self.elapsed = state["elapsed"]
        self.last_val = state.get("val_distill")
        self.adjusted = state.get("decision_adjusted", 0)
        self.rounded_widths = state.get("rounded_widths", 0)
        self.skipped_steps = state.get("skipped_steps", 0)
        self.batches.load_state_dict(state["sampler"])
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
            self.batches.close()
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

    def _teacher_pass(self, batch) -> TeacherBatch:
        return teacher_pass(self.teacher, batch, self.device, use_attention_mask=self.info.audio.attention_mask,
                            precision=self.config.precision)

    def _train_step(self, model: nn.Module, phase: str) -> dict:
        tick = time.perf_counter()
        batch = self.batches.batch(self.step)
        gate_values = self.final_values if phase == "final" else None
        metrics = train_step(model, self.gates, self.budgets, self.lambdas, self.optimizers, self._teacher_pass(batch),
                             step=self.step, phase=phase, config=self.config, ranks=self.ranks, gate_values=gate_values)
        self._count_skipped(not metrics.get("skipped", False))
        seconds = time.perf_counter() - tick
        self.elapsed += seconds
        metrics.update(
            audio_seconds_per_second=round(batch.seconds * self.ranks.world_size / seconds, 2),
            step_seconds=round(seconds, 4),
        )
        return metrics

    def _count_skipped(self, finite: bool) -> None:
        if finite:
            self.skipped_in_a_row = 0
            return
        self.skipped_steps += 1
        self.skipped_in_a_row += 1
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
        if self.rounding is not None:
            decision, self.rounded_widths = round_widths(self.spec, self.layout, self.budgets, self.gates.log_alpha,
                                                         decision, self.rounding)
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
                passed = self._teacher_pass(batch)
                student = self.model.student(passed.waveforms, passed.model_mask, masks)
                loss, _ = distill_loss(student.hidden_states, passed.teacher.hidden_states, self.model.heads,
                                       self.config.distill_weights, passed.frame_mask)
                frames = float(passed.frame_mask.sum())
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
                "optimizer": self.optimizers.optimizer.state_dict(),
                "lambda_optimizer": self.optimizers.multipliers.state_dict(),
                "scaler": self.optimizers.scaler.state_dict(),
                "rng": torch.get_rng_state(),
            },
            state={
                "step": self.step,
                "phase": phase,
                "elapsed": self.elapsed,
                "val_distill": self.last_val,
                "decision_adjusted": self.adjusted,
                "rounded_widths": self.rounded_widths,
                "skipped_steps": self.skipped_steps,
                "sampler": self.batches.state_dict(),
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
        if self.config.final_steps == 0 or self.last_val is None:
            self.last_val = self._validation_loss(self.final_values) if self.ranks.is_main else None
        summary = records.summary(self, corpus, values).to_dict()
        if self.ranks.is_main:  # the structures and --ste they are laid out by are in config.json
            atomic.write_safetensors(self.run_folder.masks_path,
                                     {"keep": (values > 0).to(torch.uint8), "values": values.float()})
            atomic.write_json(self.run_folder.summary_path, summary)
        self.ranks.barrier()
        return summary
