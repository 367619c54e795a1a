"""Options of a pruning run: defaults, validation, and which of them define the result."""

from __future__ import annotations

from dataclasses import MISSING, asdict, dataclass, field, fields, replace

from ..checks import check_positive
from ..errors import UsageError
from ..method.currencies import CURRENCIES, DEFAULT_TOLERANCE, ask_for_budget
from ..method.gates import GATE_KINDS
from ..method.macs import DEFAULT_MACS_SECONDS
from ..method.widths import check_round_to
from ..model.device import DTYPES, dtype_name

# Options that change nothing in the result: a run may be resumed with other values.
# The cost table is compared by content (config.json "budgets"), not by path.
ROUND_DECISIONS_FROM = 0.9  # share of annealing done when the hold starts to land the decisions
NOT_RESULT_DEFINING = {"out", "overwrite", "resume", "device", "log_every", "checkpoint_every", "latency_table",
                       "prefetch"}


@dataclass
class PruneConfig:
    model: str
    sparsity: float | None  # fraction of parameters to remove (None: no parameter budget)
    data: str
    out: str
    macs_sparsity: float | None = None  # fraction of MACs to remove (None: no MACs budget)
    macs_seconds: float | None = None  # audio length the MACs are counted for; None: DEFAULT_MACS_SECONDS
    latency_table: str | None = None  # cost table (bench --cost-model) that predicts latency
    speedup: float | None = None  # predicted dense latency / pruned latency to reach (None: no latency budget)
    round_to: str | None = None  # "none", "auto" or a whole number N: where the decision's widths land (None: auto
    #                              with a latency table of width steps, else none; ``method.widths``)
    revision: str | None = None
    structures: list[str] = field(default_factory=lambda: list(GATE_KINDS))
    ste: bool = True
    steps: int = 20_000  # 0: one-shot from --scores, no pruning phase
    warmup_steps: int | None = None  # target ramp 0 -> sparsity; default 30% of steps
    final_steps: int = 0  # distillation with frozen masks after the pruning phase
    lr: float = 2e-4  # weights (student and distillation heads)
    gate_lr: float = 2e-2  # log_alpha
    lambda_lr: float = 2e-2  # Lagrange multipliers (gradient ascent)
    anneal: float = 30.0  # gate sharpness at the end of the pruning phase (1: no annealing)
    distill_layers: list[int] | None = None  # default: 0 and every third of the layers
    distill_weights: list[float] | None = None  # default: 1 each
    crop_seconds: float = 4.0
    batch_seconds: float = 64.0  # audio per batch and process
    min_seconds: float = 1.0
    val_fraction: float = 0.02
    val_max_files: int = 100
    tolerance: float = DEFAULT_TOLERANCE  # relative miss of each budget's target allowed at the end
    scores: str | None = None  # analyze JSON with gate_scores: one-shot decision or warm start
    init_from_scores: bool = False  # start the gates of a full run from --scores
    seed: int = 0
    precision: str = "float32"  # a name of model.device.DTYPES (fp32, bf16, fp16 are read as aliases)
    device: str = "auto"
    prefetch: bool = True  # draw the next batch on a background thread while a step trains
    checkpoint_every: int = 500
    log_every: int = 50
    resume: bool = False
    overwrite: bool = False

    def __post_init__(self) -> None:
        # one spelling in config.json and in resume's comparison, whichever the user typed
        self.precision = dtype_name(self.precision)

    def validate(self) -> None:
        """Check every option on its own; nothing here reads files or weights."""
        if all(getattr(self, currency.field) is None for currency in CURRENCIES):
            raise UsageError(f"no budget: {ask_for_budget()}")
        if self.speedup is not None and self.latency_table is None:
            raise UsageError(
                "--speedup and --latency-table go together: the table (speechprune bench MODEL --cost-model FILE) "
                "predicts the latency that --speedup divides"
            )
        if self.latency_table is not None and self.speedup is None and self.round_to not in (None, "auto"):
            raise UsageError(f"--latency-table without --speedup only guides --round-to auto, not --round-to "
                             f"{self.round_to}; give --speedup X or drop --latency-table")
        for currency in CURRENCIES:
            if (refusal := currency.check(getattr(self, currency.field))) is not None:
                raise UsageError(refusal)
        check_round_to(self.round_to, self.latency_table)
        if self.macs_seconds is not None:
            check_positive(self.macs_seconds, "--macs-seconds")
        unknown = [s for s in self.structures if s not in GATE_KINDS]
        if unknown or not self.structures:
            raise UsageError(
                f"--structures: unknown {', '.join(unknown) or '(empty)'}; choose from {','.join(GATE_KINDS)}"
            )
        if self.steps == 0 and not self.scores:
            raise UsageError("--steps 0 (one-shot pruning) needs --scores FILE from speechprune analyze")
        if self.init_from_scores and not self.scores:
            raise UsageError("--init-from-scores needs --scores FILE from speechprune analyze")
        if self.init_from_scores and self.steps == 0:
            raise UsageError("--init-from-scores warms up a training run; with --steps 0 the scores decide directly")
        if self.steps < 0:
            raise UsageError(f"--steps must be 0 (one-shot, with --scores) or more, got {self.steps}")
        for name in ("checkpoint_every", "log_every", "val_max_files"):
            if getattr(self, name) < 1:
                raise UsageError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if self.final_steps < 0:
            raise UsageError(f"--final-steps must be 0 or more, got {self.final_steps}")
        if self.warmup_steps is not None and not 0 <= self.warmup_steps <= self.steps:
            raise UsageError(f"--warmup-steps must be between 0 and --steps ({self.steps}), got {self.warmup_steps}")
        for name in ("lr", "gate_lr", "lambda_lr", "crop_seconds", "batch_seconds", "min_seconds", "tolerance"):
            check_positive(getattr(self, name), f"--{name.replace('_', '-')}")
        if not 1 <= self.anneal < float("inf"):  # also refuses nan
            raise UsageError(f"--anneal is the gates' sharpness at the end of pruning, a finite number of at "
                             f"least 1 (1: no annealing), got {self.anneal}")
        if self.tolerance >= 1:
            raise UsageError(f"--tolerance is the allowed relative miss of a budget target, below 1 "
                             f"(e.g. 0.005 for 0.5%), got {self.tolerance}")
        if self.min_seconds > self.crop_seconds:
            raise UsageError(f"--min-seconds ({self.min_seconds}) must not exceed --crop-seconds ({self.crop_seconds})")
        if not 0 <= self.val_fraction < 1:
            raise UsageError(f"--val-fraction must be in [0, 1), got {self.val_fraction}")
        if self.precision not in DTYPES:
            raise UsageError(f"--precision must be one of {', '.join(DTYPES)}, got {self.precision!r}")
        if self.distill_weights is not None and self.distill_layers is None:
            raise UsageError("--distill-weights needs --distill-layers, one weight per layer")
        if self.distill_layers is not None:
            if not self.distill_layers or min(self.distill_layers) < 0:
                raise UsageError(f"--distill-layers must be layer numbers >= 0, got {self.distill_layers}")
            if self.distill_weights is not None and len(self.distill_weights) != len(self.distill_layers):
                raise UsageError(
                    f"--distill-weights has {len(self.distill_weights)} values for "
                    f"{len(self.distill_layers)} --distill-layers; give one weight per layer"
                )
        if self.resume and self.overwrite:
            raise UsageError("--resume and --overwrite contradict each other; pick one")

    def resolve(self, num_layers: int) -> "PruneConfig":
        """Fill the defaults that depend on the model; returns self."""
        if self.distill_layers is None:
            self.distill_layers = sorted({0, num_layers // 3, 2 * num_layers // 3, num_layers})
        if max(self.distill_layers) > num_layers:
            raise UsageError(
                f"--distill-layers {max(self.distill_layers)} does not exist: the model has {num_layers} layers "
                f"(0 is the input of the first layer)"
            )
        if self.distill_weights is None:
            self.distill_weights = [1.0] * len(self.distill_layers)
        if self.warmup_steps is None:
            self.warmup_steps = round(0.3 * self.steps)
        self.structures = [k for k in GATE_KINDS if k in self.structures]
        return self

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "PruneConfig":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})

    def result_defining(self) -> dict:
        return {k: v for k, v in self.to_dict().items() if k not in NOT_RESULT_DEFINING}

    def implied(self, num_layers: int) -> dict:
        """The value each option with a default takes when it is not given, the other options
        of this resolved config as they are: the defaults that ``resolve`` derives (warm-up
        steps from --steps, distilled layers from the model, their weights from their number)
        resolved too."""
        implied = {f.name: f.default_factory() if f.default_factory is not MISSING else f.default
                   for f in fields(self) if (f.default, f.default_factory) != (MISSING, MISSING)}
        derived = replace(self, warmup_steps=None, distill_layers=None, distill_weights=None).resolve(num_layers)
        implied.update(warmup_steps=derived.warmup_steps, distill_layers=derived.distill_layers,
                       distill_weights=[1.0] * len(self.distill_layers))
        return implied

    @property
    def reference_seconds(self) -> float:
        """Audio length (batch 1) MACs are counted for."""
        return DEFAULT_MACS_SECONDS if self.macs_seconds is None else self.macs_seconds

    def reference_samples(self, sampling_rate: int) -> int:
        """``reference_seconds`` in samples."""
        return round(self.reference_seconds * sampling_rate)

    def ramp(self, step: int) -> float:
        """Share of every final target reached at ``step``: linear from 0 to 1 over the warm-up steps."""
        if not self.warmup_steps:
            return 1.0
        return min(1.0, step / self.warmup_steps)

    def annealing(self, step: int) -> bool:
        """Whether ``step`` is in the annealing part of the pruning phase: after the target ramp."""
        return self.anneal > 1 and step > (self.warmup_steps or 0)

    def annealed(self, step: int) -> float:
        """How far annealing has gone at ``step``: 0 until the target ramp is done, 1 at the last
        pruning step."""
        if not self.annealing(step):
            return 0.0
        ramp_end = self.warmup_steps or 0
        return min(1.0, (step - ramp_end) / max(1, self.steps - ramp_end))

    def rounds_decisions(self, step: int) -> bool:
        """Whether ``step`` is in the last tenth of annealing, where the hold puts the decisions'
        costs on the targets (``step.hold_on_targets``). Earlier, most gates are undecided: their
        decisions would have the fine gates chase a cost the sampled network is far from."""
        return self.annealed(step) >= ROUND_DECISIONS_FROM

    def sharpness(self, step: int) -> float:
        """Gate sharpness at ``step``: 1 while the target ramps up, then geometric up to ``anneal``
        at the last pruning step."""
        return self.anneal ** self.annealed(step)

    def weight_lr(self, step: int, phase: str) -> float:
        """Weights: short linear warm-up, constant while pruning, linear decay in the final phase."""
        if phase == "final":
            return self.lr * max(0.0, 1 - step / max(1, self.final_steps))
        warmup = max(1, min(1000, self.steps // 20))
        return self.lr * min(1.0, step / warmup)
