"""One training step, as a function of its inputs: what ``lifecycle.Pruning`` runs every step
and what ``benchmarks/prune_step_overhead.py`` times.

A step, given a batch whose teacher outputs are known (``teacher_pass``):

1. the gated student's forward pass: hard-concrete gates sampled from ``step_seed`` in the
   pruning phase, the frozen decision in the final phase; the distillation loss;
2. in the pruning phase, the Lagrangian term of every budget (``lagrangian_term``), which
   only sends gradients to the gates;
3. backward (through the loss scaler with float16), gradient clipping, the step of the weights
   and gate logits;
4. in the pruning phase, the multipliers' step (``step_multipliers``): gradient ascent on
   (gap, gap^2) of every budget.

A loss or gradient that is not finite updates nothing; the step's metrics say "skipped".
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from torch import nn

from ..io.batches import Batch
from ..method.budget import Budget, decided_shift_onto_targets, shift_onto_targets
from ..method.distill import DistillHeads, distill_loss
from ..method.gates import COARSE_KINDS, GateLayout, HardConcreteGates
from ..model.device import autocast
from ..model.encoder import Encoder, EncoderOutput
from .config import PruneConfig
from .distributed import Distributed

GRAD_CLIP = 10.0


def step_seed(seed: int, step: int, rank: int) -> int:
    """Seed of the gate sample of ``step`` on ``rank``: a resumed run draws the same gates."""
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


@dataclass
class Optimizers:
    """What a step updates, and how."""

    weights: list[nn.Parameter]  # the trained weights: what gradient clipping covers
    optimizer: torch.optim.Optimizer  # AdamW: the weights (group 0) and the gate logits (group 1)
    multipliers: torch.optim.Optimizer  # Adam with maximize=True: the Lagrange multipliers
    scaler: torch.amp.GradScaler  # the float16 loss scaler (disabled in float32 and bfloat16)


def build_optimizers(model: GatedStudent, lambdas: torch.Tensor, config: PruneConfig, device: torch.device) -> Optimizers:
    weights = [p for n, p in model.named_parameters() if not n.startswith("gates.") and p.requires_grad]
    optimizer = torch.optim.AdamW(
        [
            {"params": weights, "lr": config.lr, "weight_decay": 0.0},
            {"params": [model.gates.log_alpha], "lr": config.gate_lr, "weight_decay": 0.0},
        ]
    )
    return Optimizers(weights, optimizer, torch.optim.Adam([lambdas], lr=config.lambda_lr, maximize=True),
                      torch.amp.GradScaler(device.type, enabled=config.precision == "float16"))


def lagrangian_term(budgets: list[Budget], gates: HardConcreteGates, lambdas: torch.Tensor, ramp: float):
    """(sum over budgets of lambda1 gap + lambda2 gap^2, expected sparsity per budget (B,), gap (B,)),
    gap = expected sparsity (from the keep probabilities) - the budget's target at this point
    of the ramp.

    Every budget has its own multiplier pair (row of ``lambdas``, (B, 2)). The term sends
    gradients to the gates only; the multipliers climb d term / d lambda = (gap, gap^2) in
    ``step_multipliers``. The returned gap is detached.
    """
    values = gates.layout.values(gates.keep_probability())
    sparsity = torch.stack([budget.expected_sparsity(values) for budget in budgets])  # (B,)
    gap = sparsity - torch.tensor([budget.sparsity * ramp for budget in budgets], dtype=sparsity.dtype,
                                  device=sparsity.device)
    term = (lambdas[:, 0].detach() * gap + lambdas[:, 1].detach() * gap**2).sum()
    return term, sparsity, gap.detach()


def step_multipliers(lambdas: torch.Tensor, optimizer: torch.optim.Optimizer, gap: torch.Tensor) -> None:
    """Gradient ascent (``optimizer`` maximizes) on the multipliers (B, 2) along the gradient of the
    Lagrangian term, (gap, gap^2) per budget: a budget whose target is not met raises its pair."""
    lambdas.grad = torch.stack([gap, gap**2], dim=1).to(lambdas.dtype)
    optimizer.step()


def hold_on_targets(budgets: list[Budget], gates: HardConcreteGates, round_decisions: bool) -> tuple[float, float]:
    """Shift the log_alphas so that the expected costs sit on the (final) targets; returns the
    common shift and the fine gates' own extra shift.

    While annealing, sharpening moves the expected costs faster than the multipliers follow
    (gates that lag the ramp all cross at once), so the costs are held on the targets directly;
    which gates are kept is still what training ranks. Expected costs are not yet what the
    decisions cost: one common shift parks the marginal structure at the threshold, and when
    that is a whole block or head its rounding moves the cost by more than the tolerance; undecided
    fine gates add their own share. So with ``round_decisions`` (the end of annealing) the fine
    gates (channels, dimensions, FFN units) take a second shift that puts the decisions
    themselves on the targets, and the weights train on with the network that will be kept.
    """
    shift = shift_onto_targets(budgets, gates)
    with torch.no_grad():
        gates.log_alpha.add_(shift)
    if not round_decisions:
        return shift, 0.0
    fine = ~gates.layout.of_kinds(COARSE_KINDS).to(gates.log_alpha.device)
    fine_shift = decided_shift_onto_targets(budgets, gates, fine)
    with torch.no_grad():
        gates.log_alpha.add_(fine * fine_shift)
    return shift, fine_shift


@dataclass
class TeacherBatch:
    """A batch as a step takes it."""

    waveforms: torch.Tensor  # (B, T) on the device
    model_mask: torch.Tensor | None  # (B, T) padding mask as the model takes it; None for models trained without
    teacher: EncoderOutput  # the frozen teacher's outputs
    frame_mask: torch.Tensor  # (B, T') bool, True on frames of real audio: where the loss is taken


def teacher_pass(teacher: Encoder, batch: Batch, device: torch.device, *, use_attention_mask: bool,
                 precision: str) -> TeacherBatch:
    """``batch`` on ``device`` with the teacher's outputs (no gradients)."""
    waveforms = batch.waveforms.to(device)
    padding = batch.attention_mask.to(device)
    model_mask = padding if use_attention_mask else None
    with torch.no_grad(), autocast(precision, device):
        out = teacher(waveforms, model_mask)
    return TeacherBatch(waveforms, model_mask, out, teacher.frame_mask(padding, out.last_hidden_state.shape[1]))


def train_step(model: nn.Module, gates: HardConcreteGates, budgets: list[Budget], lambdas: torch.Tensor,
               optimizers: Optimizers, batch: TeacherBatch, *, step: int, phase: str, config: PruneConfig,
               ranks: Distributed, gate_values: torch.Tensor | None = None,
               mark: Callable[[str], None] = lambda phase: None) -> dict:
    """Train on ``batch`` once; returns the step's metrics.

    ``model`` is the ``GatedStudent`` (DDP-wrapped with several ranks); ``phase`` is "prune"
    (sampled gates, Lagrangian, multipliers) or "final" (``gate_values``, the frozen
    decision). ``mark(name)`` is called as the "forward" and "backward" parts end.
    """
    local_step = step - config.steps if phase == "final" else step
    lr = config.weight_lr(local_step, phase)
    optimizers.optimizer.param_groups[0]["lr"] = lr
    metrics = {"step": step, "phase": phase}
    student_inputs = (batch.waveforms, batch.model_mask, batch.teacher.hidden_states, batch.frame_mask)
    if phase == "prune":
        gates.sharpness = config.sharpness(step)
        metrics["sharpness"] = round(gates.sharpness, 4)
        # Adam moves each log_alpha by about the learning rate per step, which the sharpness
        # magnifies: scaled down, a step moves the sharpened gates as far as before annealing,
        # rather than flipping every gate within sharpness * gate_lr of the threshold
        optimizers.optimizer.param_groups[1]["lr"] = config.gate_lr / gates.sharpness
        if config.annealing(step):
            shift, fine_shift = hold_on_targets(budgets, gates, round_decisions=config.rounds_decisions(step))
            metrics.update(gate_shift=round(shift, 6), fine_gate_shift=round(fine_shift, 6))
    with autocast(config.precision, batch.waveforms.device):
        if phase == "prune":
            generator = torch.Generator().manual_seed(step_seed(config.seed, step, ranks.rank))
            distill, pairs = model(*student_inputs, generator=generator)
        else:
            distill, pairs = model(*student_inputs, gate_values)
    loss = distill.float()
    gap = None
    if phase == "prune":
        ramp = config.ramp(step)
        lagrangian, expected, gap = lagrangian_term(budgets, gates, lambdas, ramp)
        loss = loss + lagrangian
        metrics["lagrangian"] = lagrangian.item()
        for budget, sparsity, (lambda1, lambda2) in zip(budgets, expected.tolist(), lambdas.tolist()):
            prefix = budget.currency.metric_prefix
            metrics.update({
                f"expected_{prefix}sparsity": round(sparsity, 6),
                f"target_{prefix}sparsity": round(budget.sparsity * ramp, 6),
                f"{prefix}lambda1": lambda1,
                f"{prefix}lambda2": lambda2,
            })
    mark("forward")

    optimizers.optimizer.zero_grad(set_to_none=True)
    # A non-finite loss or gradient never reaches the weights: the step is skipped. Gradients are
    # averaged across ranks, so only the loss needs the ranks to agree. With float16 the loss scaler
    # already skips steps with inf gradients (and lowers its scale): its business.
    finite = not ranks.any(not bool(torch.isfinite(loss)))
    if finite:
        scaler = optimizers.scaler
        scaler.scale(loss).backward()
        mark("backward")
        scaler.unscale_(optimizers.optimizer)
        norm = torch.nn.utils.clip_grad_norm_(optimizers.weights, GRAD_CLIP)
        gate_grad = gates.log_alpha.grad
        finite = scaler.is_enabled() or (
            bool(torch.isfinite(norm)) and (gate_grad is None or bool(torch.isfinite(gate_grad).all())))
        if finite:
            scaler.step(optimizers.optimizer)
            scaler.update()
            if gap is not None:
                step_multipliers(lambdas, optimizers.multipliers, gap)
    if not finite:
        metrics["skipped"] = True
    metrics.update(
        loss=loss.item(),
        distill=distill.item(),
        distill_layers={str(l): round(v, 6) for l, v in zip(config.distill_layers, pairs.tolist())},
        lr=lr,
        gate_lr=optimizers.optimizer.param_groups[1]["lr"] if phase == "prune" else 0.0,
    )
    return metrics
