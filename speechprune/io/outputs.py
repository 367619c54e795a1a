"""Rules every command that writes an output follows, whatever it writes.

- One writer per output: ``OutputLock`` holds an exclusive ``flock`` on ``.NAME.lock`` next to
  the output for the whole run (``holding``, taken once the options are checked); a second
  writer is refused at its start with the pid and host of the first. The kernel drops the lock when its process dies (even by ``kill -9``), so
  a stale lock file never blocks anyone; the pid written in it is only for the message.
- An output never is, contains or lies inside one of the command's inputs (``check_apart``),
  so ``--overwrite`` cannot delete the model, the audio or the run it reads.
- An output location can be written (``check_out_path``), found before any weights load.
- Only speechprune's own outputs are ever replaced (``check_replaceable``): a folder holding
  ``MARKER`` (written into every output folder), one written before the marker existed (a run,
  a shrunk model folder), or an empty one; a file of the kind the command writes (a JSON record
  with a ``format``, a PNG, an ONNX graph from torch). The root, the home folder, the current
  folder and the folders above them are refused outright as output folders.
- ``~`` means the home folder in every path (``expand``, which the CLI applies to every option).
- An output given as a symbolic link is what the link points to (``output_path``): the checks,
  the lock and the write all see that target, so a link replaces only what these rules let its
  target be replaced for (a speechprune output, an empty folder), and keeps pointing to the
  result; a link to nothing is refused.

``check_output`` does all the checks; commands call it once, before anything is read, and
``write_file`` writes a file output under its lock, checking again what it replaces.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import tempfile
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Callable

from ..errors import OutputError, UsageError
from .atomic import dumps, remove_stale_temporaries, write_text, write_with
from .reading import read_bytes, read_text

MARKER = ".speechprune-output"  # in every folder speechprune writes as an output: --overwrite may replace it
_NAMED_ENTRIES = 4  # entries of a foreign folder named in the refusal


class OutputLock:
    """``with OutputLock(out, "--out"):`` hold the exclusive right to write ``out``.

    On entry the temporaries a killed writer of ``out`` left behind are removed (their writer is
    dead: it no longer holds the lock). On exit the lock file is deleted while still locked, and
    a writer that locked a deleted file retries on the new one (inode check), so two writers can
    never both hold ``out``. Within one process the lock nests: a command holds it for its whole
    run (``holding``) and writes under it with ``write_file``, which locks again.
    """

    _held: dict[Path, int] = {}  # lock files this process holds -> how many OutputLocks entered them

    def __init__(self, out: str | Path, option: str = "--out"):
        self.out = _lock_target(out)
        self.option = option
        self.path = self.out.parent / f".{self.out.name}.lock"
        self.fd: int | None = None

    def __enter__(self) -> "OutputLock":
        if self.path in OutputLock._held:
            OutputLock._held[self.path] += 1
            return self
        while True:
            try:
                self.out.parent.mkdir(parents=True, exist_ok=True)
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
            except OSError as error:
                raise OutputError(
                    f"cannot write next to {self.option} {self.out} ({error.strerror}); choose a writable {self.option}"
                ) from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.read(fd, 200).decode(errors="replace").strip() or "another process"
                os.close(fd)
                raise OutputError(
                    f"{self.option} {self.out} is being written by {holder}; "
                    f"wait for it to finish or choose another {self.option}"
                ) from None
            if _same_file(fd, self.path):
                break
            os.close(fd)  # the holder deleted the file we locked on its way out: lock the new one
        os.ftruncate(fd, 0)
        os.write(fd, f"process {os.getpid()} on {socket.gethostname()}\n".encode())
        self.fd = fd
        OutputLock._held[self.path] = 1
        remove_stale_temporaries(self.out)
        return self

    def __exit__(self, *exc) -> None:
        OutputLock._held[self.path] -= 1
        if self.fd is None:  # a nested entry: the outer one unlocks
            return
        del OutputLock._held[self.path]
        self.path.unlink(missing_ok=True)
        os.close(self.fd)  # closing drops the lock
        self.fd = None


@contextmanager
def holding(outputs: dict[str, str | Path | None]):
    """``with holding({"--out": path, ...}):`` hold the lock of every output given (None skipped)
    for the whole run, so that a second run on the same output is refused at its start, not when
    it writes."""
    with ExitStack() as stack:
        for option, path in outputs.items():
            if path is not None:
                stack.enter_context(OutputLock(path, option))
        yield


def _lock_target(out: str | Path) -> Path:
    """The one name of ``out`` whatever the spelling (links, ``..``), so that every spelling takes one lock."""
    try:
        return expand(out).resolve()
    except (OSError, RuntimeError):  # a link loop: output_path refuses it before anything is written
        return expand(out).absolute()


def _same_file(fd: int, path: Path) -> bool:
    try:
        return os.path.samestat(os.fstat(fd), os.stat(path))
    except FileNotFoundError:
        return False


def expand(path: str | os.PathLike) -> Path:
    """``path`` with a leading ``~`` or ``~user`` expanded: the one ``~`` rule of every command."""
    return Path(os.path.expanduser(os.fspath(path)))


def output_path(out: str | os.PathLike, option: str) -> Path:
    """Where the output ``out`` is written: ``out`` itself, or, when it is a symbolic link, the file
    or folder the link points to (followed as a shell's ``>`` follows it; the link itself stays and
    points to the result). A link to nothing (dangling, or a loop) is refused (usage error):
    writing through it would create a file wherever it points. An empty ``out`` (an unset
    shell variable) is refused too, not read as the current folder."""
    if not os.fspath(out).strip():
        raise UsageError(f"{option} is empty; give the output's file or folder name")
    path = expand(out)
    if not path.is_symlink():
        return path
    try:
        return path.resolve(strict=True)
    except (OSError, RuntimeError):  # missing target; a loop is RuntimeError before Python 3.13
        raise UsageError(f"{option} {out} is a symbolic link to {os.readlink(path)}, which does not exist; give the "
                         f"output's own path, or remove the link") from None


def is_within(path: str | Path, folder: str | Path) -> bool:
    """True when ``path`` is ``folder`` or lies inside it, comparing resolved paths (links, ``..``)."""
    path, folder = expand(path).resolve(), expand(folder).resolve()
    return path == folder or folder in path.parents


def check_apart(out: str | Path, option: str, inputs: dict[str, str | Path | None], folder: bool = True) -> None:
    """Refuse (usage error) an output that is, contains or lies inside an input: a folder in any of
    the three relations, a file (``folder=False``) when it is an input or lies inside an input
    folder (a report written into the data would join the data, into a model folder would change
    what the folder is).

    ``inputs`` maps an option name (``--data``) to its path; None and names that are not local
    paths (hub ids) are skipped.
    """
    for name, path in inputs.items():
        if path is None or not expand(path).exists():
            continue
        inside, around = is_within(out, path), is_within(path, out)
        if inside or (folder and around):
            relation = "is" if inside and around else "lies inside" if inside else "contains"
            raise UsageError(
                f"{option} {out} {relation} {name} {path}; writing there could destroy the input: "
                f"choose an {option} outside it"
            )


def check_output(out: str | Path, option: str, inputs: dict[str, str | Path | None], *, folder: bool,
                 overwrite: bool = False, kind: str = "json") -> Path:
    """``out`` can be written, stays apart from the command's ``inputs`` and replaces nothing but
    speechprune's own outputs (see the checks); returns the path to write (``output_path``: a
    link's target, checked in its place). ``overwrite``: the command may replace a folder of its
    own (``--overwrite``); ``kind``: what a file output holds (``FILE_KINDS``)."""
    target = output_path(out, option)
    if folder:
        check_not_a_home(target, option)
    check_out_path(target, option, folder=folder)
    check_apart(target, option, inputs, folder=folder)
    if overwrite or not folder:  # a file output never replaces a foreign file, with or without --overwrite
        check_replaceable(target, option, folder=folder, kind=kind)
    return target


def check_not_a_home(out: str | Path, option: str) -> None:
    """Refuse the root, the home folder, the current folder, and any folder above the last two,
    as an output folder: replacing one would delete what the user keeps there."""
    target = expand(out).resolve()
    for name, home in (("your home folder", Path.home()), ("the current folder", Path.cwd())):
        home = home.resolve()
        if target == home or target in home.parents:
            what = name if target == home else f"a folder above {name} ({home})"
            raise UsageError(f"{option} {out} is {what}; give a new subfolder for the output, e.g. {option} {out}/run")


def mark_own(folder: Path, what: str) -> None:
    """Write ``MARKER`` into ``folder``: speechprune wrote it and ``--overwrite`` may replace it."""
    write_text(Path(folder) / MARKER, f"{what} written by speechprune; speechprune --overwrite may replace this folder\n")


def is_own_folder(folder: Path) -> bool:
    """``folder`` holds speechprune's marker, or is an output of a version before the marker: a
    run (config.json and encoder.json) or a shrunk model folder (config.json, model_type speechprune)."""
    folder = Path(folder)
    if (folder / MARKER).is_file() or (folder / "config.json").is_file() and (folder / "encoder.json").is_file():
        return True
    try:
        return json.loads(read_text(folder / "config.json")).get("model_type") == "speechprune"
    except (OSError, ValueError, AttributeError):
        return False


def _json_record(head: bytes, path: Path) -> bool:
    try:
        data = json.loads(read_text(path))
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and isinstance(data.get("format"), int)


# What a file output of each kind replaces: a file of that kind that speechprune writes.
FILE_KINDS: dict[str, tuple[str, Callable[[bytes, Path], bool]]] = {
    "json": ("a speechprune JSON record (with a format)", _json_record),
    "png": ("a PNG image", lambda head, path: head.startswith(b"\x89PNG\r\n\x1a\n")),
    "onnx": ("an ONNX graph exported from torch or quantized by ONNX Runtime",  # producer: export-onnx's, float or int8
             lambda head, path: head[:1] == b"\x08" and (b"pytorch" in head or b"onnx.quantize" in head)),
}


def check_replaceable(out: str | Path, option: str, *, folder: bool, kind: str = "json") -> None:
    """Refuse to replace what speechprune did not write: a folder that is not empty and not
    ``is_own_folder`` (naming what is in it), or a file that is not of ``kind``."""
    target = expand(out)
    if folder:
        entries = sorted(p.name for p in target.iterdir()) if target.is_dir() else []
        if entries and not is_own_folder(target):
            named = ", ".join(entries[:_NAMED_ENTRIES]) + (f" and {len(entries) - _NAMED_ENTRIES} more"
                                                             if len(entries) > _NAMED_ENTRIES else "")
            raise OutputError(f"{option} {out} holds {named}, which speechprune did not write; --overwrite only "
                              f"replaces speechprune's own outputs: choose a new or empty {option}")
        return
    if target.exists():  # a FIFO or a device too: not speechprune's to replace
        described, recognise = FILE_KINDS[kind]
        try:
            head = read_bytes(target, 64)
        except OSError as error:
            raise OutputError(f"{option} {out} exists and cannot be read ({error.strerror}); choose another {option}")
        if not recognise(head, target):
            raise OutputError(f"{option} {out} exists and is not {described}; speechprune replaces only its own "
                              f"outputs: choose another {option} or move the file away")


def write_file(path: str | Path, option: str, write: Callable[[Path], None], kind: str = "json") -> None:
    """Write the file output ``path`` under its lock, atomically (``write(tmp)`` fills a temporary),
    checking again, with the lock held, that what it replaces is speechprune's own (through a
    link: its target, ``output_path``)."""
    path = output_path(path, option)
    with OutputLock(path, option):
        check_replaceable(path, option, folder=False, kind=kind)
        write_with(path, write)


def write_json_file(path: str | Path, option: str, data) -> None:
    """``write_file`` of strict JSON (``atomic.dumps``)."""
    text = dumps(data) + "\n"
    write_file(path, option, lambda tmp: tmp.write_text(text))


def check_out_path(path: str | os.PathLike, option: str = "--out", *, folder: bool) -> None:
    """Refuse an output location that cannot be written, before the work that would fill it.

    ``folder``: the command writes a folder at ``path`` (prune, shrink), else a file (analyze,
    eval). Every existing component above it must be a folder, and the nearest existing one
    must accept a new entry: that is tried for real (permissions, read-only mounts and
    pseudo file systems like /proc all answer differently to ``os.access``).
    """
    target = expand(path)
    if target.exists():
        if folder and not target.is_dir():
            raise OutputError(f"{option} {path} is a file; choose a folder")
        if not folder and target.is_dir():
            raise OutputError(f"{option} {path} is a folder; give a file name")
    existing = target if folder and target.is_dir() else target.parent
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise OutputError(f"{option} {path}: {existing} is a file, not a folder; choose another {option}")
    try:
        tempfile.TemporaryDirectory(prefix=".speechprune-write-test-", dir=existing).cleanup()
    except OSError as error:
        raise OutputError(f"{option} {path}: cannot write in {existing}, it does not accept new files "
                          f"({error.strerror or error}); choose another {option}") from error
