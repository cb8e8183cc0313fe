"""Settings fields that describe themselves: a dataclass field made with :func:`option` carries
its help text and choices, so the command line generates its flags from the dataclass
(``mganprior.cli.dataclass_flags``) instead of restating names, defaults and help."""

from __future__ import annotations

from dataclasses import field
from typing import Any


def option(help: str, choices: tuple[str, ...] | None = None, **kwargs: Any) -> Any:
    """A dataclass field with ``help`` and ``choices`` in its metadata; ``kwargs`` go to
    :func:`dataclasses.field` (``default=...``)."""
    return field(metadata={"help": help, "choices": choices}, **kwargs)
