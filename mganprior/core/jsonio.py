"""Strict JSON and CSV files: non-finite floats become ``null``, writes are atomic, and the one
tolerant reader of JSON-lines files names every damaged line instead of failing on it."""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from mganprior.core.errors import InputError
from mganprior.core.files import atomic_write_bytes


def json_safe(value: Any) -> Any:
    """Non-finite floats become None so the files stay strict JSON; tuples become lists."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


def json_line(record: dict[str, Any]) -> str:
    return json.dumps(json_safe(record), allow_nan=False) + "\n"


def write_json(path: str | Path, payload: Any) -> None:
    body = json.dumps(json_safe(payload), indent=2, allow_nan=False) + "\n"
    atomic_write_bytes(path, body.encode())


def read_json(path: str | Path, what: str = "file") -> Any:
    """A JSON file; a missing or damaged one is an InputError naming it."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{what} {path} does not exist")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise InputError(f"{what} {path} is not valid JSON ({err})") from None


def read_jsonl(path: str | Path, problems: list[str] | None = None) -> list[dict[str, Any]]:
    """The objects of a JSON-lines file, skipping (and naming in ``problems``) damaged lines.

    A missing file has no lines. A line that is not a JSON object counts as damaged.
    """
    path = Path(path)
    if not path.is_file():
        return []
    records = []
    with open(path, encoding="utf-8", errors="replace") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                record = None
            if isinstance(record, dict):
                records.append(record)
            elif problems is not None:
                problems.append(f"{path.name} line {number} is damaged and was skipped")
    return records


def csv_text(rows: Iterable[dict[str, Any]],
             columns: tuple[str, ...] | list[str] | None = None) -> str:
    """CSV with ``columns`` (default: the first row's keys) as header; '' with neither."""
    rows = list(rows)
    buffer = io.StringIO()
    fieldnames = list(columns) if columns is not None else list(rows[0]) if rows else []
    if fieldnames:
        writer = csv.DictWriter(buffer, fieldnames=fieldnames, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    return buffer.getvalue()


def write_csv(path: str | Path, rows: Iterable[dict[str, Any]],
              columns: tuple[str, ...] | list[str] | None = None) -> None:
    """:func:`csv_text`, written atomically."""
    atomic_write_bytes(path, csv_text(rows, columns).encode())


def append_csv(path: str | Path, rows: Iterable[dict[str, Any]],
               columns: tuple[str, ...] | list[str]) -> None:
    """Add ``rows`` to a CSV file, writing the header first when the file is new (one writer
    at a time: the caller owns the file)."""
    path = Path(path)
    new = not path.is_file()
    text = csv_text(rows, columns)
    with open(path, "a", encoding="utf-8", newline="") as handle:
        handle.write(text if new else text.split("\n", 1)[1])


def read_csv(path: str | Path) -> list[dict[str, str]]:
    """Rows of a CSV file as dicts of strings (empty for a missing file)."""
    path = Path(path)
    if not path.is_file():
        return []
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))
