"""Typed, versioned JSON records: a dataclass with a ``format`` field whose default is the one
format the record is written in and read back in (the command reports: analyze, eval, bench,
shrink).

``to_dict`` is the JSON document, ``format`` first; ``from_dict`` reads one back and refuses, in
one line that names the fix, a document of another format (or of none) and one that lacks a key.
Sections of a record may be JSON-ready dicts and lists; they go out and come back as they are.
"""

from __future__ import annotations

from dataclasses import asdict, fields
from typing import ClassVar

from ..errors import FormatError


class Versioned:
    """Base of a versioned record (a dataclass); ``WHAT`` names it in errors ("bench report")."""

    WHAT: ClassVar[str] = "record"

    def to_dict(self) -> dict:
        data = asdict(self)
        return {"format": data.pop("format"), **data}

    @classmethod
    def from_dict(cls, data: dict):
        names = [f.name for f in fields(cls)]
        written = next(f.default for f in fields(cls) if f.name == "format")
        if not isinstance(data, dict):
            raise FormatError(f"not a {cls.WHAT}: a JSON object was expected, got {type(data).__name__}")
        if data.get("format") != written:
            raise FormatError(
                f"{cls.WHAT} of format {data.get('format')}: this speechprune reads format {written}; read it "
                "with the speechprune version that wrote it, or make it again with this one"
            )
        missing = [name for name in names if name not in data]
        if missing:
            raise FormatError(f"{cls.WHAT} without {', '.join(missing)}: it is damaged; make it again")
        return cls(**{name: data[name] for name in names})
