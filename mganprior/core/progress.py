"""Progress for people and for log files: a bar when the output is a terminal, otherwise no bar
(no carriage returns or escape codes in a file or pipe) and, from the callers, one line per
finished image or cell."""

from __future__ import annotations

import sys
from typing import Any

from tqdm.auto import tqdm


def interactive() -> bool:
    """Whether progress goes to a terminal (stderr, where bars and notes go)."""
    stream = sys.stderr
    return bool(getattr(stream, "isatty", None) and stream.isatty())


def progress_bar(iterable: Any = None, *, enabled: bool = True, **options: Any) -> tqdm:
    """A tqdm bar that shows only when ``enabled`` and stderr is a terminal."""
    return tqdm(iterable, disable=not (enabled and interactive()), **options)
