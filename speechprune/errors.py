"""Errors a user can fix. The CLI prints them as one line and exits with their code."""


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


class ExportError(SpeechpruneError):
    """An exported model that does not compute what the torch model computes, or a missing exporter."""


class FormatError(SpeechpruneError, ValueError):
    """A JSON record of a format this speechprune does not read, or one that lacks a key."""


class OutputError(SpeechpruneError):
    """An output location that cannot be written (a file in the way, no permission)."""


class DiskFullError(SpeechpruneError):
    """The disk filled up while writing ``path``; ``rerun`` says how to continue once space is freed."""

    def __init__(self, path, rerun: str = "rerun"):
        super().__init__(path)
        self.path = path
        self.rerun = rerun

    def __str__(self) -> str:
        return f"no space left on device while writing {self.path}; free space and {self.rerun}"
