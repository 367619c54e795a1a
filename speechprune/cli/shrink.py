"""`speechprune shrink` (not built yet)."""

import typer

from ..errors import SpeechpruneError


def command(ctx: typer.Context) -> None:
    """Materialise a pruning run as a physically smaller model that transformers can load. (not built yet)"""
    raise SpeechpruneError("speechprune shrink is not built yet (tracked as issue 3); use speechprune prune for now")
