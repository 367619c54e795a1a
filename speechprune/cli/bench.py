"""`speechprune bench` (not built yet)."""

import typer

from ..errors import SpeechpruneError


def command(ctx: typer.Context) -> None:
    """Latency, throughput, memory and speedup against a baseline model. (not built yet)"""
    raise SpeechpruneError("speechprune bench is not built yet (tracked as issue 4); use speechprune prune for now")
