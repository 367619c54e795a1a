"""The two records of a run folder, typed and versioned: config.json (``RunRecord``: every
option of the run, the command that reproduces it, versions, source model, audio settings,
budgets) and summary.json (``RunSummary``: what the final decision keeps and costs).

``prune`` fills them (``prune/records.py``); every reader goes through ``from_dict``, which
also reads the runs of earlier formats:

- format 1 (speechprune 0.1.0 up to 0.2.0.dev0): config.json kept the options that define the
  result (``options``, with ``world_size``) and all of them again (``all_options``), and the
  structures and ``ste`` a third time under ``gates``; summary.json had no ``format`` (and in
  0.1.0 neither MACs nor budgets). Options added since take the value that reproduces such
  runs (``LATER_OPTIONS``), and the command is every recorded option.
- format 2: each option once, under ``options`` (``structures`` and ``ste`` among them), with
  ``world_size`` and ``command`` beside them; summary.json says its format.
- summary.json format 3 (config.json stays at 2): a budget's "at or under its window" is
  ``fits``; format 2 called it ``within_tolerance`` like the top level's "the decision lands".
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

from ..errors import RunFolderError
from ..method.currencies import LATENCY, MACS, PARAMS
from ..method.macs import DEFAULT_MACS_SECONDS
from ..model.loading import AudioInput

RUN_FORMAT = 2
READABLE_FORMATS = (1, 2)
# summary.json: 3 names a budget's "at or under its window" fits (format 2 called it
# within_tolerance, the name of the top-level "the decision lands" too)
SUMMARY_FORMAT = 3
READABLE_SUMMARY_FORMATS = (1, 2, 3)
# options added after format 1 was written, with the value that reproduces runs saved without them
LATER_OPTIONS = {"anneal": 1.0}
# where a run goes and what happens to a folder already there: left to whoever runs the command again
NOT_IN_COMMAND = ("out", "resume", "overwrite")
# options that name a local file or folder (or a hub id): resumed runs compare them resolved
# (data/ = data = /abs/data), and the command writes them absolute
PATH_OPTIONS = ("model", "data", "scores", "latency_table")
NEGATABLE = ("ste",)  # boolean options that have a --no- form; the others are plain flags, off by default


def prune_command(options: dict, defaults: dict | None = None) -> list[str]:
    """The ``speechprune`` arguments that run prune with ``options`` again: MODEL, then, in the
    order of the options, each one that is given (not None) and differs from its value in
    ``defaults`` (an option missing there is always written), except ``NOT_IN_COMMAND``."""
    defaults = defaults or {}
    argv = ["prune", str(options["model"])]
    for name, value in options.items():
        if name == "model" or name in NOT_IN_COMMAND or value is None:
            continue
        if name in defaults and value == defaults[name]:
            continue
        flag = "--" + name.replace("_", "-")
        if isinstance(value, bool):
            if value or name in NEGATABLE:
                argv.append(flag if value else f"--no-{flag[2:]}")
        else:
            argv += [flag, ",".join(map(str, value)) if isinstance(value, list) else str(value)]
    return argv


@dataclass
class SourceRecord:
    """The model a run was pruned from, and the part of it taken."""

    model: str
    revision: str | None
    commit: str | None  # hub commit hash, when loaded from the hub
    weights_sha256: str | None
    family: str
    architecture: str
    taken: str
    left_out: list[str]


@dataclass(frozen=True)
class AudioRecord(AudioInput):
    """How the source model takes audio (``AudioInput``'s fields), and how much of it the run had."""

    files: int
    hours: float


@dataclass
class RunRecord:
    """config.json of a run."""

    speechprune: str  # versions of the software that started the run
    torch: str
    transformers: str
    python: str
    options: dict  # every option, resolved (prune's PruneConfig.to_dict()): the one copy of each
    world_size: int
    command: list[str]  # `speechprune` arguments that make this run again (prune_command)
    source: SourceRecord
    audio: AudioRecord
    gate_count: int  # length of the flat gate vector
    params_dense: int
    budgets: dict  # {name: {option, sparsity, dense, ...}}, as prune/records.budget_records writes them
    format: int = RUN_FORMAT

    @property
    def structures(self) -> list[str]:
        return self.options["structures"]

    @property
    def ste(self) -> bool:
        return self.options["ste"]

    @property
    def macs_seconds(self) -> float:
        """Audio length (batch 1) the run counts MACs for."""
        return self.options.get("macs_seconds") or DEFAULT_MACS_SECONDS

    def to_dict(self) -> dict:
        data = {"format": self.format}
        for name, value in asdict(self).items():
            if name == "gate_count":
                data["gates"] = {"count": value}
            elif name != "format":
                data[name] = value
        return data

    @classmethod
    def from_dict(cls, data: dict, where: str = "config.json") -> "RunRecord":
        """The record of config.json ``data`` of any readable format; a one-line error otherwise."""
        _check_format(data, where)
        try:
            if data["format"] == 1:
                data = _format_1(data)
            return cls(
                **{f.name: data[f.name] for f in fields(cls) if f.name not in ("source", "audio", "gate_count")},
                source=SourceRecord(**data["source"]),
                audio=AudioRecord(**data["audio"]),
                gate_count=data["gates"]["count"],
            )
        except (KeyError, TypeError, AttributeError) as error:
            raise RunFolderError(f"{where} is damaged ({type(error).__name__}: {error}); copy the run folder again, "
                                 "or prune again") from None

    def resume_options(self) -> dict:
        """What a resumed run is compared with: the options and the number of processes."""
        return {**self.options, "world_size": self.world_size}


def _check_format(data: dict, where: str) -> None:
    """Refuse a config.json this speechprune cannot read, naming the version that wrote it."""
    if not isinstance(data, dict):
        raise RunFolderError(f"{where} is not a run's config.json (not a JSON object); pass the --out folder of "
                             "speechprune prune")
    if data.get("format") not in READABLE_FORMATS:
        raise RunFolderError(
            f"{where} was written by an incompatible speechprune ({data.get('speechprune')}, run format "
            f"{data.get('format')}; this one reads formats {READABLE_FORMATS[0]} to {READABLE_FORMATS[-1]}): "
            "use that speechprune version, or prune again into another --out (or with --overwrite)"
        )


def _format_1(data: dict) -> dict:
    """config.json of format 1 in the shape of format 2."""
    options = {**LATER_OPTIONS, **data["all_options"]}
    # runs written before budgets were recorded had a parameter budget only
    budgets = data.get("budgets") or {PARAMS.name: {"option": PARAMS.option, "sparsity": options[PARAMS.field]}}
    return {**data, "options": options, "world_size": data["options"]["world_size"],
            "command": prune_command(options), "budgets": budgets}


@dataclass
class MacsFigures:
    """The encoder's MACs before and after, for ``macs_seconds`` of audio (batch 1), and the MACs
    target when the run had a MACs budget. A run of 0.1.0 counted no MACs."""

    macs_seconds: float
    macs_dense: int
    macs_pruned: int
    macs_sparsity: float
    target_macs_sparsity: float | None


@dataclass
class PredictedLatency:
    """A latency budget's prediction (its cost table) for the dense and the pruned encoder, in the
    table's runtime; with a table of format 3 also the stock model's float32 eager torch time the
    table measured, and the pruned model's predicted speedup against it (None before)."""

    predicted_ms_dense: float
    predicted_ms_pruned: float
    predicted_speedup: float
    predicted_runtime: str | None = None  # "torch float32", "onnxruntime int8", ...
    stock_ms_dense: float | None = None
    predicted_speedup_vs_stock: float | None = None


# fields of RunSummary whose keys stand flat in the JSON: each currency's figures besides its budget
SUMMARY_PARTS = {MACS.summary_part: MacsFigures, LATENCY.summary_part: PredictedLatency}


@dataclass
class RunSummary:
    """summary.json of a finished run (also what ``prune --json`` prints). Keys are described in
    docs/prune.md; those a run of 0.1.0 did not write are None. The keys of ``macs`` and
    ``predicted`` stand at the top level of the JSON, ``null`` when there is no such part."""

    run_dir: str
    model: str
    family: str
    params_dense: int
    params_pruned: int
    sparsity: float
    target_sparsity: float | None
    target_params: int | None
    target_miss: float | None
    within_tolerance: bool
    steps: int
    final_steps: int
    world_size: int
    val_distill: float | None
    params_by_component: dict
    kept: dict
    audio: dict
    train_seconds: float
    budgets: dict = field(default_factory=dict)
    binding_budget: str | None = None
    macs: MacsFigures | None = None
    predicted: PredictedLatency | None = None  # with a latency budget
    decision_adjusted: int | None = None
    decision_adjusted_share: float | None = None
    skipped_steps: int | None = None
    round_to: str | None = None  # where the widths landed (--round-to resolved: "none", "auto", "8")
    rounded_widths: int | None = None  # widths --round-to moved
    format: int = SUMMARY_FORMAT

    def to_dict(self) -> dict:
        data = {"format": self.format}
        for name, value in asdict(self).items():
            if name in SUMMARY_PARTS:
                data |= value or dict.fromkeys(f.name for f in fields(SUMMARY_PARTS[name]))
            elif name != "format":
                data[name] = value
        return data

    @classmethod
    def from_dict(cls, data: dict, where: str = "summary.json") -> "RunSummary":
        """The summary ``data``: of this format, or without one (0.1.0 to 0.2.0.dev0)."""
        if not isinstance(data, dict):
            raise RunFolderError(f"{where} is damaged (not a JSON object); prune again")
        if data.get("format", 1) not in READABLE_SUMMARY_FORMATS:
            raise RunFolderError(f"{where} is of run format {data.get('format')}, which this speechprune cannot "
                                 "read; use the speechprune version that wrote it")
        names = {f.name for f in fields(cls)}
        parts = {}
        for name, part in SUMMARY_PARTS.items():
            values = {f.name: data.get(f.name) for f in fields(part)}
            parts[name] = part(**values) if any(v is not None for v in values.values()) else None
        try:
            summary = cls(**{k: v for k, v in data.items() if k in names and k != "format"}, **parts)
        except TypeError as error:
            raise RunFolderError(f"{where} is damaged ({error}); prune again") from None
        if data.get("format", 1) < 3:  # a budget's fits was its within_tolerance
            summary.budgets = {name: {("fits" if key == "within_tolerance" else key): value
                                      for key, value in budget.items()} for name, budget in summary.budgets.items()}
        if not summary.budgets:  # 0.1.0: a parameter budget only, reported at the top level
            summary.budgets = {PARAMS.name: {
                "option": PARAMS.option, "unit": PARAMS.unit, "target": summary.target_params,
                "target_sparsity": summary.target_sparsity, "achieved": summary.params_pruned,
                "achieved_sparsity": summary.sparsity, "miss": summary.target_miss,
                "fits": summary.within_tolerance,
            }}
            summary.binding_budget = PARAMS.name
        return summary

