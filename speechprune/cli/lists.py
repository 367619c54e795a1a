"""Comma-separated option values (`--seconds 1,5,10`, `--distill-layers 0,4,8,12`)."""

from __future__ import annotations

from ..errors import UsageError

EXAMPLES = {int: "0,4,8,12", float: "1,5,10", str: "float32,bfloat16"}


def comma_list(option: str, text: str, kind: type) -> list:
    """The values of ``text`` as ``kind``; a UsageError naming ``option`` if any does not parse."""
    try:
        items = [kind(item.strip()) for item in text.split(",")]
    except ValueError:
        items = []
    if not items or (kind is str and not all(items)):
        raise UsageError(f"{option} takes comma-separated {kind.__name__} values, like {EXAMPLES[kind]}; got {text!r}")
    return items
