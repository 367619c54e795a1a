"""`speechprune analyze` (not built yet)."""

import typer

from ..errors import SpeechpruneError


def command(ctx: typer.Context) -> None:
    """Attention-head importance statistics per layer, head and head dimension. (not built yet)"""
    raise SpeechpruneError("speechprune analyze is not built yet (tracked as issue 5); use speechprune prune for now")
