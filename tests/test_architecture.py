"""The shape of the code base: dependencies point down, and light modules stay light."""

from __future__ import annotations

import ast
import json
import subprocess
import sys

import pytest

from helpers import REPO

# What each package may import from the project (the arrows of docs/architecture.md).
ALLOWED = {
    "core": set(),
    "inversion": {"core"},
    "segmentation": {"core"},
    "analysis": {"core", "inversion", "segmentation"},
    "reports": {"core", "inversion", "segmentation", "analysis"},
    "training": {"core", "inversion", "segmentation"},
    "scenes": {"core", "inversion", "segmentation", "training"},
    "mganprior": {"core", "inversion", "segmentation", "analysis", "reports", "training",
                  "scenes"},
}


def project_imports(path) -> set[str]:
    """Top-level project packages a module imports (anywhere in the file)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        found.update(name.split(".")[0] for name in names if name.split(".")[0] in ALLOWED)
    return found


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_dependencies_point_down(package):
    wrong = {}
    for path in sorted((REPO / package).rglob("*.py")):
        upward = project_imports(path) - ALLOWED[package] - {package}
        if upward:
            wrong[str(path.relative_to(REPO))] = sorted(upward)
    assert not wrong, f"imports against the arrows: {wrong}"


def modules_after(statement: str) -> set[str]:
    code = f"import sys, json; {statement}; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=REPO)
    return set(json.loads(out.stdout))


@pytest.mark.parametrize("statement", [
    "import segmentation.vocabularies",
    "import core.errors, core.files, core.jsonio, core.resume, core.claims",
    "import inversion, segmentation, analysis, reports, training",
])
def test_light_imports_load_no_engine(statement):
    loaded = modules_after(statement)
    heavy = {"inversion.engine", "skimage", "tqdm", "torch", "segmentation_models_pytorch",
             "matplotlib"} & loaded
    assert not heavy, f"{statement} loads {sorted(heavy)}"


def test_the_api_names_resolve_on_first_use():
    loaded = modules_after("from inversion import invert, get_recipe, Inversion")
    assert "inversion.engine" in loaded
