"""The shape of the code base: dependencies point down, and light modules stay light."""

from __future__ import annotations

import ast
import json
import subprocess
import sys

import pytest

from helpers import REPO

# What each package may import from the project (the arrows of docs/architecture.md). The user's
# four packages are top-level names; everything else lives under mganprior.
ALLOWED = {
    "mganprior.core": set(),
    "inversion": {"mganprior.core"},
    "segmentation": {"mganprior.core"},
    "analysis": {"mganprior.core", "inversion", "segmentation"},
    "reports": {"mganprior.core", "inversion", "segmentation", "analysis"},
    "mganprior.training": {"mganprior.core", "inversion", "segmentation"},
    "mganprior.scenes": {"mganprior.core", "inversion", "segmentation", "mganprior.training"},
    "mganprior": {"mganprior.core", "inversion", "segmentation", "analysis", "reports",
                  "mganprior.training", "mganprior.scenes"},
}
TOP_LEVEL = {"inversion", "segmentation", "analysis", "reports", "mganprior"}


def package_of(module: str) -> str | None:
    """The package of ``ALLOWED`` a dotted module name belongs to (None: not ours)."""
    parts = module.split(".")
    nested = ".".join(parts[:2])
    if nested in ALLOWED:
        return nested
    return parts[0] if parts[0] in ALLOWED else None


def project_imports(path) -> set[str]:
    """Project packages a module imports (anywhere in the file)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        found.update(filter(None, map(package_of, names)))
    return found


def files_of(package: str) -> list:
    """The modules of ``package``, without those of the packages nested in it."""
    nested = [REPO / name.replace(".", "/") for name in ALLOWED if name.startswith(package + ".")]
    return sorted(path for path in (REPO / package.replace(".", "/")).rglob("*.py")
                  if not any(folder in path.parents for folder in nested))


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_dependencies_point_down(package):
    wrong = {}
    for path in files_of(package):
        upward = project_imports(path) - ALLOWED[package] - {package}
        if upward:
            wrong[str(path.relative_to(REPO))] = sorted(upward)
    assert not wrong, f"imports against the arrows: {wrong}"


def test_the_wheel_installs_only_the_five_top_level_names():
    import tomllib
    from setuptools import find_packages

    config = tomllib.loads((REPO / "pyproject.toml").read_text())
    found = find_packages(REPO, **config["tool"]["setuptools"]["packages"]["find"])
    assert {name.split(".")[0] for name in found} == TOP_LEVEL
    assert set(ALLOWED) <= set(found)  # every package of the arrows ships


def modules_after(statement: str) -> set[str]:
    code = f"import sys, json; {statement}; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=REPO)
    return set(json.loads(out.stdout))


@pytest.mark.parametrize("statement", [
    "import segmentation.vocabularies",
    "import mganprior.core.errors, mganprior.core.files, mganprior.core.jsonio, "
    "mganprior.core.resume, mganprior.core.claims",
    "import inversion, segmentation, analysis, reports, mganprior.training",
])
def test_light_imports_load_no_engine(statement):
    loaded = modules_after(statement)
    heavy = {"inversion.engine", "skimage", "tqdm", "torch", "segmentation_models_pytorch",
             "matplotlib"} & loaded
    assert not heavy, f"{statement} loads {sorted(heavy)}"


def test_the_api_names_resolve_on_first_use():
    loaded = modules_after("from inversion import invert, get_recipe, Inversion")
    assert "inversion.engine" in loaded


@pytest.mark.parametrize("argv", [["--help"], ["invert", "--help"]])
def test_the_command_line_help_loads_no_tensor_or_plotting_library(argv):
    code = ("import sys, json, contextlib, io\nfrom mganprior.cli import main\n"
            "with contextlib.redirect_stdout(io.StringIO()):\n"
            "    try:\n"
            f"        main({argv!r})\n"
            "    except SystemExit:\n"
            "        pass\n"
            "print(json.dumps(sorted(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=REPO)
    loaded = set(json.loads(out.stdout.splitlines()[-1]))
    heavy = {"torch", "matplotlib", "seaborn", "pandas", "numpy"} & loaded
    assert not heavy, f"mganprior {' '.join(argv)} loads {sorted(heavy)}"


def test_every_command_module_is_light_and_every_command_parses():
    from mganprior.cli import COMMANDS, build_parser

    loaded = modules_after("import mganprior.cli")
    assert not {"torch", "matplotlib", "numpy"} & loaded
    for name in COMMANDS:  # each command's own arguments build without a clash
        sub = build_parser(name)._subparsers._group_actions[0].choices[name]
        assert len(sub._actions) > 1 and sub.description == COMMANDS[name].description
