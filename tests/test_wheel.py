"""The package as users install it: our wheel in a fresh virtual environment, used from a folder
outside the checkout. The environment reuses the dependencies already installed (a path to this
environment's site-packages, whose ``.pth`` hooks, our editable install among them, do not run
there), so nothing is downloaded."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import numpy as np
import pytest

from helpers import REPO, write_png

TOP_LEVEL = {"inversion", "segmentation", "analysis", "reports", "mganprior"}


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """A fresh environment with our wheel installed, and the wheel's path."""
    root = tmp_path_factory.mktemp("wheel")
    source = root / "source"  # setuptools builds in the source tree: keep the checkout clean
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(
        ".venv", ".git", "runs", "build", "dist", "*.egg-info", "__pycache__", ".*_cache"))
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps",
                            "--no-build-isolation", "--quiet", "-w", str(root / "dist"),
                            str(source)], capture_output=True, text=True, cwd=root)
    assert built.returncode == 0, built.stderr[-2000:]
    wheel = next((root / "dist").glob("mganprior-*.whl"))
    environment = root / "env"
    venv.EnvBuilder(with_pip=False).create(environment)
    python = environment / "bin" / "python"
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; "
                                "print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    (site / "reused-dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    with zipfile.ZipFile(wheel) as archive:  # a wheel is a zip laid out as site-packages
        archive.extractall(site)
    subprocess.run([str(python), "-m", "mganprior.torchvision_fix"], check=True,
                   capture_output=True, cwd=root)
    return python, wheel, root


def run(python: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    environment["HF_HUB_OFFLINE"] = "1"
    return subprocess.run([str(python), "-m", "mganprior", *args], cwd=cwd, env=environment,
                          capture_output=True, text=True, timeout=600)


def test_the_wheel_holds_five_top_level_names_and_the_committed_models(installed):
    _, wheel, _ = installed
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
    tops = {name.split("/")[0] for name in names if not name.split("/")[0].endswith(
        (".dist-info", ".data"))}
    assert tops == TOP_LEVEL
    assert "mganprior/scenes/weights/bedroom-pggan64.safetensors" in names
    assert any(name.startswith("mganprior/scenes/weights/scenes-segmenter64/") for name in names)
    assert any(name.startswith("reports/templates/") for name in names)


def test_the_installed_wheel_works_outside_the_checkout(installed):
    python, _, root = installed
    work = root / "elsewhere"
    (work / "images").mkdir(parents=True)
    where = subprocess.run([str(python), "-c", "import mganprior, inversion; "
                            "print(mganprior.__file__); print(inversion.__file__)"],
                           cwd=work, capture_output=True, text=True, check=True).stdout
    assert str(REPO) not in where and str(root / "env") in where  # the wheel, not the checkout
    zoo = run(python, work, "zoo")
    assert zoo.returncode == 0 and "bedroom-pggan64" in zoo.stdout, zoo.stderr
    for i, color in enumerate([(120, 90, 60), (40, 60, 90)]):
        write_png(work / "images" / f"p{i}.png", np.full((64, 64, 3), color, np.uint8))
    inverted = run(python, work, "invert", "--generator", "bedroom-pggan64", "--images",
                   "images", "--out", "run", "--iterations", "2", "--codes", "3", "--quiet")
    assert inverted.returncode == 0, inverted.stderr
    attributed = run(python, work, "attribute", "run", "--segmenter", "scenes-segmenter64",
                     "--quiet")
    assert attributed.returncode == 0, attributed.stderr
    reported = run(python, work, "report", "run", "--out", "report.html")
    assert reported.returncode == 0, reported.stderr
    assert (work / "report.html").stat().st_size > 10_000
