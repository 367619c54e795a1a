"""speechprune: make self-supervised speech encoders smaller and faster without task labels."""

__version__ = "0.2.0.dev0"


def load(path, dtype=None):
    """Load a model folder written by `speechprune shrink` (no remote code needed)."""
    from .folders.shrunk import load as _load

    return _load(path, dtype)
