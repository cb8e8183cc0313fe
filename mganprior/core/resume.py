"""The one resume rule for runs, studies and trainers.

A folder remembers the settings that made it. Rerunning with the same settings resumes; settings
named in ``may_change`` (where the work runs, how it is batched, how long a trainer goes on) may
differ; any other difference is refused with every differing setting named, stored value first.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from mganprior.core.errors import InputError


def _canonical(value: Any) -> Any:
    """What a value becomes after a JSON round trip (tuples are lists), so a stored file and a
    fresh dict compare equal when they say the same thing."""
    return json.loads(json.dumps(value, default=str))


def settings_differences(stored: Mapping[str, Any], wanted: Mapping[str, Any],
                         may_change: Iterable[str] = ()) -> list[str]:
    """``key: stored vs wanted`` for every setting that differs and may not change."""
    free = set(may_change)
    stored, wanted = _canonical(dict(stored)), _canonical(dict(wanted))
    keys = sorted((set(stored) | set(wanted)) - free)
    return [f"{key}: {json.dumps(stored.get(key))} vs {json.dumps(wanted.get(key))}"
            for key in keys if stored.get(key) != wanted.get(key)]


def check_resume(stored: Mapping[str, Any], wanted: Mapping[str, Any], *, what: str,
                 where: str | Path, may_change: Iterable[str] = ()) -> None:
    """Refuse to resume ``where`` (holding a ``what``) when settings other than ``may_change``
    differ; the InputError names each one."""
    differences = settings_differences(stored, wanted, may_change)
    if differences:
        raise InputError(f"{where} holds a {what} with other settings "
                         f"({'; '.join(differences)}); use another output directory or the "
                         "same settings to resume")
