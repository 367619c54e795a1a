"""The run folder: everything needed to shrink, inspect or resume a pruning run.

    RUN/
      config.json          every option, the command, versions, source model (``RunRecord``)
      encoder.json         architecture of the dense encoder (EncoderSpec)
      source_config.json   the transformers config of the source model
      metrics.jsonl        one line per step
      checkpoints/latest   name of the newest complete checkpoint
      checkpoints/step-N/  student.safetensors, gates.safetensors, distill_heads.safetensors,
                           optimizer.pt, state.json
      masks.safetensors    final keep decision and gate values (finished runs)
      summary.json         final counts and losses (``RunSummary``); its presence marks a finished run
      data.json            the usable audio of --data when the run started (``io.audio.corpus_fingerprint``),
                           compared on --resume (runs written before it lack it)
      .speechprune-output  the marker that lets --overwrite replace the folder (``io.outputs``)

``prune`` writes it (``RunFolder``); ``read_run`` reads what shrink, bench, analyze and eval
need of it (the student and its gates). config.json and summary.json, and their formats, are
typed in ``run_record``. Checkpoints are written to a temporary folder and renamed into place,
then ``latest`` is replaced atomically, so an interruption at any moment leaves the previous
checkpoint intact.
"""

from __future__ import annotations

import contextlib
import json
import pickle
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from ..errors import RunFolderError
from ..io import atomic
from ..io.outputs import MARKER, expand, mark_own
from ..io.reading import read_json_object, read_text
from ..method.gates import GateLayout, HardConcreteGates
from ..model.device import dtype_name
from ..model.loading import resolved_path
from ..model.spec import EncoderSpec
from .run_record import PATH_OPTIONS, RunRecord, RunSummary

DATA_FORMAT = 1  # data.json: the audio's fingerprint (``io.audio.corpus_fingerprint``)

# Said by prune, shrink, analyze and bench alike, so it names the command that repairs a run.
REPAIR = "copy the whole run folder again, or start the run over with `speechprune prune ... --overwrite`"


@dataclass
class Checkpoint:
    folder: Path
    state: dict  # step, phase, lambdas, sampler state, ...

    def tensors(self, name: str) -> dict[str, torch.Tensor]:
        path = self.folder / f"{name}.safetensors"
        with self._reading(path):
            return load_file(str(path))

    def torch_state(self) -> dict:
        path = self.folder / "optimizer.pt"
        with self._reading(path):
            return torch.load(path, weights_only=True)

    @contextlib.contextmanager
    def _reading(self, path: Path):
        """A missing or damaged checkpoint file is a broken run folder, not a crash."""
        try:
            yield
        except FileNotFoundError as error:
            raise RunFolderError(f"checkpoint file {path} is missing; {REPAIR}") from error
        except (OSError, SafetensorError, pickle.UnpicklingError, RuntimeError, EOFError) as error:
            raise RunFolderError(f"cannot read checkpoint file {path} ({' '.join(str(error).split())[:200]}); "
                                 f"{REPAIR}") from error


class RunFolder:
    def __init__(self, root: str | Path):
        self.root = expand(root)

    config_path = property(lambda self: self.root / "config.json")
    encoder_path = property(lambda self: self.root / "encoder.json")
    source_config_path = property(lambda self: self.root / "source_config.json")
    metrics_path = property(lambda self: self.root / "metrics.jsonl")
    summary_path = property(lambda self: self.root / "summary.json")
    masks_path = property(lambda self: self.root / "masks.safetensors")
    data_path = property(lambda self: self.root / "data.json")
    checkpoints = property(lambda self: self.root / "checkpoints")

    # --- deciding what to do with an existing folder (reads only) ---

    def plan(self, options: dict, *, resume: bool, overwrite: bool) -> str:
        """"fresh", "resume" or "finished" for a run of the result-defining ``options`` (with
        "world_size"); raises when the folder must not be touched."""
        root = self.root  # outputs.check_output has made sure it is a folder or can be one
        if not root.exists() or not any(root.iterdir()) or overwrite:
            return "fresh"
        if not self.config_path.exists():
            raise RunFolderError(
                f"--out {root} is not empty and is not a speechprune run; "
                "choose another --out or pass --overwrite to replace its contents"
            )
        saved = self.record()
        if not resume:
            raise RunFolderError(
                f"--out {root} already holds a run; pass --resume to continue it or --overwrite to start over"
            )
        changed = _differences(saved.resume_options(), options)
        if changed:
            raise RunFolderError(
                f"refusing to resume {root}: options differ from the saved run ({'; '.join(changed)}); "
                "rerun with the saved options or choose another --out"
            )
        if self.summary_path.exists():
            return "finished"
        return "resume" if self.latest_checkpoint() else "fresh"

    def record(self) -> RunRecord:
        """config.json, of any readable format."""
        return RunRecord.from_dict(self.read_json(self.config_path), str(self.config_path))

    def summary(self) -> RunSummary:
        """summary.json of a finished run."""
        return RunSummary.from_dict(self.read_json(self.summary_path), str(self.summary_path))

    def read_json(self, path: Path) -> dict:
        """One of the run's JSON files; a missing or damaged one is a broken run folder, not a crash."""
        try:
            return read_json_object(path)
        except (OSError, ValueError) as error:  # JSONDecodeError is a ValueError
            raise RunFolderError(f"cannot read {path}: {error}; the run folder is damaged")

    def check_source(self, weights_sha256: str | None, use: str = "resume",
                     fix: str = "point MODEL at the original weights or choose another --out") -> None:
        """Refuse to ``use`` the run with other source weights than it was pruned from (their
        sha256, recorded in config.json when it started; runs of hub models record theirs too)."""
        record = self.record()
        saved = record.source.weights_sha256
        if saved and weights_sha256 and saved != weights_sha256:
            raise RunFolderError(
                f"refusing to {use} {self.root}: the weights of {record.source.model} changed since the run "
                f"started (sha256 {saved[:12]}... then, {weights_sha256[:12]}... now); {fix}"
            )

    def check_budgets(self, budgets: dict) -> None:
        """Refuse to resume with other budgets than the run started with (same options, but a
        cost table whose content changed). What the run recorded of each budget is compared:
        runs from before budgets were recorded kept only the option and its value."""
        saved = self.record().budgets
        changed = sorted(name for name in set(saved) | set(budgets)
                         if name not in saved or name not in budgets
                         or any(budgets[name].get(key) != value for key, value in saved[name].items()))
        if changed:
            raise RunFolderError(
                f"refusing to resume {self.root}: the {', '.join(changed)} budget differs from the saved run "
                "(for latency: the content of --latency-table changed); rerun with the saved inputs or choose another --out"
            )

    def check_data(self, data: dict, source: str, warn) -> None:
        """Refuse to resume on other audio than the run started with (``data``: the corpus
        fingerprint now); a run that recorded none gets a warning through ``warn``."""
        if not self.data_path.exists():
            warn(f"{self.root} did not record its audio (an older run): --data {source} could not be compared "
                 "with the audio the run started on")
            return
        saved = self.read_json(self.data_path)
        if saved.get("format") != DATA_FORMAT:
            raise RunFolderError(f"{self.data_path} is not of format {DATA_FORMAT}; the run folder is damaged or "
                                 "from a newer speechprune: start a new run in another --out")
        if saved.get("sha256") == data["sha256"]:
            return
        then, now = (f"{d.get('files')} files of {d.get('bytes', 0) / 1e6:.1f} MB" for d in (saved, data))
        change = f"{then} then, {now} now" if then != now else f"{now} as then, but other file names or sizes"
        raise RunFolderError(f"refusing to resume {self.root}: the usable audio of --data {source} changed since "
                             f"the run started ({change}); restore that audio, or start a new run in another --out")

    # --- writing ---

    def save_data(self, data: dict) -> None:
        atomic.write_json(self.data_path, {"format": DATA_FORMAT, **data})

    def start_fresh(self, record: RunRecord, spec: EncoderSpec, source_config: dict) -> None:
        if self.root.exists():
            for child in self.root.iterdir():  # --overwrite, or a run that died before its first checkpoint
                if child.name != MARKER:  # kept to the end: a crash half-way leaves a folder --overwrite may replace
                    atomic.remove(child)  # a link: the link, not its target
        self.root.mkdir(parents=True, exist_ok=True)
        mark_own(self.root, "a prune run")
        atomic.write_json(self.config_path, record.to_dict())
        atomic.write_json(self.encoder_path, spec.to_dict())
        atomic.write_json(self.source_config_path, source_config)

    def save_checkpoint(
        self,
        step: int,
        phase: str,
        tensors: dict[str, dict[str, torch.Tensor]],
        torch_state: dict,
        state: dict,
    ) -> Path:
        self.checkpoints.mkdir(parents=True, exist_ok=True)
        name = f"step-{step:08d}-{phase}"
        final = self.checkpoints / name
        tmp = atomic.temp_dir(final)
        try:
            with atomic.disk_full_names(final):
                for file, content in tensors.items():
                    atomic.write_safetensors(tmp / f"{file}.safetensors", content)
                atomic.write_torch(tmp / "optimizer.pt", torch_state)
                atomic.write_json(tmp / "state.json", state)
            if final.exists():
                shutil.rmtree(final)
            tmp.rename(final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        atomic.write_text(self.checkpoints / "latest", name + "\n")
        for old in self.checkpoints.iterdir():  # keep only the newest complete checkpoint (and drop temporaries)
            if old.is_dir() and old.name != name:
                shutil.rmtree(old, ignore_errors=True)
        return final

    def latest_checkpoint(self) -> Checkpoint | None:
        pointer = self.checkpoints / "latest"
        if not pointer.exists():
            return None
        folder = pointer
        try:
            folder = self.checkpoints / read_text(pointer).strip()
            return Checkpoint(folder, json.loads(read_text(folder / "state.json")))
        except (OSError, json.JSONDecodeError) as error:
            raise RunFolderError(f"the latest checkpoint of {self.root}, {folder}, is missing or damaged "
                                 f"({error.strerror if isinstance(error, OSError) else error}); {REPAIR}")

    def truncate_metrics(self, step: int) -> None:
        """Drop metric lines past ``step`` (written after the checkpoint we resume from), and a
        last line cut short by a crash or a full disk."""
        if not self.metrics_path.exists():
            return
        lines = [line for line in read_text(self.metrics_path).splitlines() if line.strip()]
        kept = []
        for number, line in enumerate(lines, start=1):
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                if number == len(lines):  # torn by the interruption: its step is redone anyway
                    break
                raise RunFolderError(
                    f"{self.metrics_path} line {number} is not JSON; the run folder is damaged: "
                    "repair or delete that line, or start over with --overwrite"
                ) from None
            if record["step"] <= step:
                kept.append(line)
        atomic.write_text(self.metrics_path, "".join(line + "\n" for line in kept))

    def remove_stale_temporaries(self) -> None:
        """Temporaries a killed writer left inside the run (call while holding the run's lock)."""
        for folder in (self.root, self.checkpoints):
            for child in folder.iterdir() if folder.is_dir() else ():
                if child.name.endswith(atomic.TEMP_SUFFIX):
                    atomic.remove(child)  # a link: the link, not its target

    def missing_files(self) -> list[Path]:
        """Files a run with a checkpoint (and a finished run) cannot do without, that are gone."""
        needed = [self.config_path, self.encoder_path]
        checkpoint = self.latest_checkpoint()
        if checkpoint is not None:
            needed += [checkpoint.folder / "student.safetensors", checkpoint.folder / "gates.safetensors"]
        if self.summary_path.exists():
            needed.append(self.masks_path)
        return [path for path in needed if not path.exists()]


def _same_option(key: str, saved, current) -> bool:
    if key in PATH_OPTIONS and saved and current and saved != current:
        return resolved_path(saved) == resolved_path(current)
    return saved == current


def _differences(saved: dict, current: dict) -> list[str]:
    """The ``current`` options that differ from the ``saved`` ones (the saved record also keeps
    options that do not define the result)."""
    if "precision" in saved:  # runs before 0.2 stored fp32|bf16|fp16
        saved = {**saved, "precision": dtype_name(saved["precision"])}
    keys = sorted(current)
    return [f"{k}: {saved.get(k)!r} -> {current.get(k)!r}" for k in keys
            if not _same_option(k, saved.get(k), current.get(k))]


def read_spec(run: RunFolder) -> EncoderSpec:
    return EncoderSpec.from_dict(run.read_json(run.encoder_path))


# --- reading a run: what shrink, bench, analyze and eval need -------------------------------


@dataclass
class RunSnapshot:
    """What a run folder holds for the commands that read it: the student and its final (or,
    mid-run, current) gates."""

    run: RunFolder
    record: RunRecord  # config.json of the run
    spec: EncoderSpec  # dense architecture
    layout: GateLayout
    state: dict[str, torch.Tensor]  # student weights
    values: torch.Tensor  # (N,) deterministic gate values
    step: int
    finished: bool


def read_run(path: str | Path) -> RunSnapshot:
    """The run at ``path``, refused with a one-line error when it is not a run, another format's,
    damaged, without a checkpoint yet, or diverged."""
    run = RunFolder(path)
    if not run.root.is_dir():
        raise RunFolderError(f"{path} is not a folder; pass the --out folder of a speechprune prune run")
    data = run.read_json(run.config_path) if run.config_path.exists() else {}
    if "model_type" in data and "format" not in data:
        raise RunFolderError(f"{path} is a model folder, not a prune run; shrink takes the --out folder of "
                             "speechprune prune (run speechprune prune on this model first)")
    if "format" not in data:
        raise RunFolderError(f"{path} is not a speechprune run (no run config.json); pass the --out folder of speechprune prune")
    record = RunRecord.from_dict(data, str(run.config_path))
    missing = run.missing_files()
    if missing:
        raise RunFolderError(
            f"the run folder {path} is damaged: {missing[0]} is missing; restore it, "
            "or run speechprune prune again into a new --out"
        )
    checkpoint = run.latest_checkpoint()
    if checkpoint is None:
        raise RunFolderError(f"{path} has no checkpoint yet; wait for the first one (--checkpoint-every) or the end of the run")
    spec = read_spec(run)
    layout = GateLayout(spec, record.structures)
    finished = run.summary_path.exists()
    if finished:
        values = load_file(str(run.masks_path))["values"]
    else:  # mid-run: the checkpoint's decision, or 1[log_alpha > 0]
        saved = checkpoint.tensors("gates")
        gates = HardConcreteGates(layout, ste=record.ste)
        with torch.no_grad():
            gates.log_alpha.copy_(saved["log_alpha"])
        values = gates.deterministic(saved["keep"].bool() if "keep" in saved else None)
    state = checkpoint.tensors("student")
    damaged = [name for name, tensor in state.items() if tensor.is_floating_point() and not torch.isfinite(tensor).all()]
    if damaged or not torch.isfinite(values).all():
        raise RunFolderError(
            f"the run {path} holds NaN or infinite {'weights (' + damaged[0] + ')' if damaged else 'gate values'} "
            f"at step {checkpoint.state['step']}: its training diverged or its files are damaged; prune again"
        )
    return RunSnapshot(run, record, spec, layout, state, values.double(), checkpoint.state["step"], finished)
