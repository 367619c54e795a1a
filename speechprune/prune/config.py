"""Options of a pruning run: defaults, validation, and which of them define the result."""

from __future__ import annotations

from dataclasses import MISSING, asdict, dataclass, field, fields, replace

from ..checks import MAX_STEPS, check_count, check_positive, check_seed
from ..errors import UsageError
from ..method.currencies import CURRENCIES, DEFAULT_TOLERANCE, ask_for_budget
from ..method.gates import GATE_KINDS
from ..method.macs import DEFAULT_MACS_SECONDS
from ..method.widths import check_round_to
from ..model.device import DTYPES, check_precision_name, dtype_name

# Options that change nothing in the result: a run may be resumed with other values.
# The cost table is compared by content (config.json "budgets"), not by path.
ROUND_DECISIONS_FROM = 0.9  # share of annealing done when the hold starts to land the decisions
NOT_RESULT_DEFINING = {"out", "overwrite", "resume", "device", "log_every", "checkpoint_every", "latency_table",
                       "prefetch"}


def option(default=MISSING, help: str = "", *, factory=MISSING):
    """A field of ``PruneConfig`` that is also an option of ``speechprune prune``, with its default
    (``factory`` for a list) and its ``--help`` text: ``cli/prune.py`` reads both from here, so a
    new option is one field."""
    return field(default=default, default_factory=factory, metadata={"help": help})


@dataclass
class PruneConfig:
    """Every option of a pruning run, named as on the command line (``--gate-lr`` is ``gate_lr``)."""

    model: str = option(help="Hub id (facebook/wav2vec2-base) or local folder saved with save_pretrained.")
    # fraction of parameters to remove (None: no parameter budget)
    sparsity: float | None = option(help="Fraction of encoder parameters to remove, in (0, 1).")
    data: str = option(help="Folder of audio (searched recursively) or manifest file.")
    out: str = option(help="Run folder. [default: runs/<model>-<sparsity>]")
    macs_sparsity: float | None = option(None, "Fraction of encoder MACs to remove, in (0, 1), for --macs-seconds "
                                               "of audio; alone or with --sparsity.")
    # None: DEFAULT_MACS_SECONDS (a run records what was given)
    macs_seconds: float | None = option(None, "Audio length (batch 1) the MACs budget counts. "
                                              f"[default: {DEFAULT_MACS_SECONDS:g}]")
    latency_table: str | None = option(None, "Cost table of this model from speechprune bench MODEL --cost-model "
                                             "FILE, for --speedup; with width steps it also guides --round-to auto.")
    # predicted dense latency / pruned latency to reach (None: no latency budget)
    speedup: float | None = option(None, "Predicted speedup to reach, above 1 (e.g. 3: a third of the dense "
                                         "latency), predicted by --latency-table; alone or with the other budgets.")
    # "none", "auto" or a whole number N (None: auto with a latency table of width steps, else none; method.widths)
    round_to: str | None = option(None, "Where the decision's widths (conv channels, FFN units, per-head dims) land: "
                                        "N rounds each to a multiple of N, auto to widths --latency-table says run "
                                        "fast, none keeps them. [default: auto with a table of width steps, else "
                                        "none]")
    revision: str | None = option(None, "Hub revision (branch, tag or commit) of MODEL.")
    structures: list[str] = option(factory=lambda: list(GATE_KINDS),
                                   help=f"Structures to gate, from {','.join(GATE_KINDS)}.")
    ste: bool = option(True, "Straight-through estimator (binary masks in training) or relaxed gates.")
    steps: int = option(20_000, "Pruning steps; 0 decides in one shot from --scores.")  # 0: no pruning phase
    warmup_steps: int | None = option(None, "Steps over which the target ramps from 0. [default: 30% of --steps]")
    final_steps: int = option(0, "Extra distillation steps with the masks frozen.")
    lr: float = option(2e-4, "Learning rate of the weights.")  # student and distillation heads
    gate_lr: float = option(2e-2, "Learning rate of the gate logits.")  # log_alpha
    lambda_lr: float = option(2e-2, "Learning rate of the Lagrange multipliers.")  # gradient ascent
    anneal: float = option(30.0, "Gate sharpness reached at the end of the pruning phase, from 1 once the target "
                                 "ramp is done, with the expected costs held on the targets: the decision lands "
                                 "where training went. 1 turns annealing off.")
    distill_layers: list[int] | None = option(None, "Hidden states to distil, e.g. 0,4,8,12 (0 = input of layer "
                                                    "1). [default: 0 and every third layer]")
    distill_weights: list[float] | None = option(None, "Loss weight per distilled layer, e.g. 1,1,1,2.")  # None: 1 each
    crop_seconds: float = option(4.0, "Length of the random crops.")
    batch_seconds: float = option(64.0, "Audio seconds per batch and process.")
    min_seconds: float = option(1.0, "Skip files shorter than this.")
    val_fraction: float = option(0.02, "Share of files held out for the validation loss.")
    val_max_files: int = option(100, "At most this many files held out for the validation loss.")
    tolerance: float = option(DEFAULT_TOLERANCE, "Allowed relative miss of each budget target (parameters, MACs) "
                                                 "by the final keep decision, in (0, 1).")
    scores: str | None = option(None, "JSON from speechprune analyze --out: one-shot ranking (--steps 0) or warm "
                                      "start.")
    init_from_scores: bool = option(False, "Start the gates of a full run from --scores.")
    seed: int = option(0, "Seed of data order, crops and gate noise.")
    # stored canonical (model.device.dtype_name): fp32, bf16, fp16 are read as aliases
    precision: str = option("float32", f"Numeric precision of training (autocast): {'|'.join(DTYPES)} (fp32, "
                                       "bf16, fp16 also accepted).")
    device: str = option("auto")  # its help is every command's (cli/options.DeviceOption)
    prefetch: bool = option(True, "Read and crop the next batch of audio on a background thread while a step "
                                  "trains (the batches are the same either way).")
    checkpoint_every: int = option(500, "Save a checkpoint every N steps.")
    log_every: int = option(50, "Log line every N steps when not on a terminal.")
    resume: bool = option(False, "Continue the run in --out (starts it if there is none).")
    overwrite: bool = option(False, "Replace the run (or other speechprune output) in --out.")

    def __post_init__(self) -> None:
        # one spelling in config.json and in resume's comparison, whichever the user typed
        self.precision = dtype_name(self.precision)

    def validate(self) -> None:
        """Check every option on its own; nothing here reads files or weights."""
        self._validate_budgets()
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
        check_count(self.steps, "--steps", least=0, most=MAX_STEPS)  # 0: one-shot, with --scores
        check_count(self.final_steps, "--final-steps", least=0, most=MAX_STEPS)
        check_seed(self.seed)
        for name in ("checkpoint_every", "log_every", "val_max_files"):
            if getattr(self, name) < 1:
                raise UsageError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
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
        check_precision_name(self.precision, "--precision")
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

    def _validate_budgets(self) -> None:
        """The budgets and the options that shape them: at least one, each in range, a table where one is
        needed, and --round-to."""
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
