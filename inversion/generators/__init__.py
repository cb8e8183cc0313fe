"""Layered generators: the contract, the families (PGGAN, DCGAN, any module via hooks), and the
registry of file formats that load them.

Kept light on purpose: importing a submodule (``inversion.generators.base``) must not pull in the
families or the formats. Names here are resolved on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Cut": "inversion.generators.base",
    "CarrySpec": "inversion.generators.base",
    "Layer": "inversion.generators.base",
    "LayeredGenerator": "inversion.generators.base",
    "StagedGenerator": "inversion.generators.base",
    "capture_outputs": "inversion.generators.base",
    "DCGANGenerator": "inversion.generators.dcgan",
    "HookedGenerator": "inversion.generators.hooked",
    "PGGANGenerator": "inversion.generators.pggan",
    "FAMILIES": "inversion.generators.formats",
    "FORMATS": "inversion.generators.formats",
    "load_generator_file": "inversion.generators.formats",
    "save_generator": "inversion.generators.saving",
    "file_sha256": "mganprior.core.weights",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'inversion.generators' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
