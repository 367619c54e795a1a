"""Errors a user can fix. The CLI prints them as one line and exits with their code."""

import errno


class SpeechpruneError(Exception):
    """A known problem with the user's input or environment: one line, what is wrong and how to fix it."""

    exit_code = 1


class UsageError(SpeechpruneError):
    """Options that contradict each other or are out of range (exit code 2, like a CLI usage error)."""

    exit_code = 2


class DataError(SpeechpruneError):
    """Audio input that cannot be used."""


class ModelError(SpeechpruneError):
    """A model path or checkpoint that cannot be loaded or is not supported."""


class RunFolderError(SpeechpruneError):
    """A run folder that is missing, belongs to another run, or would be overwritten."""


class OutputError(SpeechpruneError):
    """An output location that cannot be written (a file in the way, no permission, a full disk)."""


def is_disk_full(error: BaseException) -> bool:
    """ENOSPC from Python's own writes, or from safetensors' Rust writer, which reports only
    its text ("No space left on device (os error 28)")."""
    return getattr(error, "errno", None) == errno.ENOSPC or "os error 28" in str(error)


def disk_full_message(where: object) -> str:
    return f"no space left on device while writing {where}; free space and rerun"
