"""Build the API reference of the user's four packages from their docstrings (pdoc):

    python docs/api.py [OUT]          # default OUT: docs/api (not committed); `make docs`

``inversion`` and ``inversion.generators`` export their public names lazily (PEP 562, so
``import inversion`` stays light); the names are resolved first so that the reference lists
them where users import them from.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

PACKAGES = ("inversion", "segmentation", "analysis", "reports")


def resolve_lazy_exports(name: str) -> None:
    module = importlib.import_module(name)
    for export in getattr(module, "__all__", ()):
        vars(module).setdefault(export, getattr(module, export))


def main() -> None:
    import pdoc

    out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent / "api"
    for name in ("inversion", "inversion.generators"):
        resolve_lazy_exports(name)
    pdoc.render.configure(docformat="restructuredtext")
    pdoc.pdoc(*PACKAGES, output_directory=out)
    print(f"API reference: {out / 'index.html'}")


if __name__ == "__main__":
    main()
