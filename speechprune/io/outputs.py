"""Rules every command that writes an output follows, whatever it writes.

- One writer per output: ``OutputLock`` holds an exclusive ``flock`` on ``.NAME.lock`` next to
  the output for as long as the command writes it; a second writer is refused with the pid and
  host of the first. The kernel drops the lock when its process dies (even by ``kill -9``), so
  a stale lock file never blocks anyone; the pid written in it is only for the message.
- An output never is, contains or lies inside one of the command's inputs (``check_apart``),
  so ``--overwrite`` cannot delete the model, the audio or the run it reads.
- An output location can be written (``check_out_path``), found before any weights load.

``check_output`` does both checks; commands call it once, before anything is read.
"""

from __future__ import annotations

import fcntl
import os
import socket
import tempfile
from pathlib import Path

from ..errors import OutputError, RunFolderError, UsageError
from .atomic import remove_stale_temporaries


class OutputLock:
    """``with OutputLock(out, "--out"):`` hold the exclusive right to write ``out``.

    On entry the temporaries a killed writer of ``out`` left behind are removed (their writer is
    dead: it no longer holds the lock). On exit the lock file is deleted while still locked, and
    a writer that locked a deleted file retries on the new one (inode check), so two writers can
    never both hold ``out``.
    """

    def __init__(self, out: str | Path, option: str = "--out"):
        self.out = Path(out).expanduser().absolute()
        self.option = option
        self.path = self.out.parent / f".{self.out.name}.lock"
        self.fd: int | None = None

    def __enter__(self) -> "OutputLock":
        while True:
            try:
                self.out.parent.mkdir(parents=True, exist_ok=True)
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
            except OSError as error:
                raise RunFolderError(
                    f"cannot write next to {self.option} {self.out} ({error.strerror}); choose a writable {self.option}"
                ) from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.read(fd, 200).decode(errors="replace").strip() or "another process"
                os.close(fd)
                raise RunFolderError(
                    f"{self.option} {self.out} is being written by {holder}; "
                    f"wait for it to finish or choose another {self.option}"
                ) from None
            if _same_file(fd, self.path):
                break
            os.close(fd)  # the holder deleted the file we locked on its way out: lock the new one
        os.ftruncate(fd, 0)
        os.write(fd, f"process {os.getpid()} on {socket.gethostname()}\n".encode())
        self.fd = fd
        remove_stale_temporaries(self.out)
        return self

    def __exit__(self, *exc) -> None:
        self.path.unlink(missing_ok=True)
        os.close(self.fd)  # closing drops the lock
        self.fd = None


def _same_file(fd: int, path: Path) -> bool:
    try:
        return os.path.samestat(os.fstat(fd), os.stat(path))
    except FileNotFoundError:
        return False


def is_within(path: str | Path, folder: str | Path) -> bool:
    """True when ``path`` is ``folder`` or lies inside it, comparing resolved paths (links, ``..``)."""
    path, folder = Path(path).expanduser().resolve(), Path(folder).expanduser().resolve()
    return path == folder or folder in path.parents


def check_apart(out: str | Path, option: str, inputs: dict[str, str | Path | None], folder: bool = True) -> None:
    """Refuse (usage error) an output folder that is, contains or lies inside an input; an output
    file (``folder=False``) only must not be an input (a new file inside an input folder harms nothing).

    ``inputs`` maps an option name (``--data``) to its path; None and names that are not local
    paths (hub ids) are skipped.
    """
    for name, path in inputs.items():
        if path is None or not Path(path).expanduser().exists():
            continue
        inside, around = is_within(out, path), is_within(path, out)
        if (inside or around) if folder else (inside and around):
            relation = "is" if inside and around else "lies inside" if inside else "contains"
            raise UsageError(
                f"{option} {out} {relation} {name} {path}; writing there could destroy the input: "
                f"choose an {option} outside it"
            )


def check_output(out: str | Path, option: str, inputs: dict[str, str | Path | None], *, folder: bool) -> None:
    """``out`` can be written and stays apart from the command's ``inputs`` (see both checks)."""
    check_out_path(out, option, folder=folder)
    check_apart(Path(out).expanduser(), option, inputs, folder=folder)


def check_out_path(path: str | os.PathLike, option: str = "--out", *, folder: bool) -> None:
    """Refuse an output location that cannot be written, before the work that would fill it.

    ``folder``: the command writes a folder at ``path`` (prune, shrink), else a file (analyze,
    eval). Every existing component above it must be a folder, and the nearest existing one
    must accept a new entry: that is tried for real (permissions, read-only mounts and
    pseudo file systems like /proc all answer differently to ``os.access``).
    """
    target = Path(path).expanduser()
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
