"""`mganprior attribute`: files written, one clear line for each bad input, nothing half-written."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from helpers import make_tiny_pggan, write_png
from inversion.generators import save_generator
from mganprior.cli import main

CODES = 4


@pytest.fixture
def checkpoint(tmp_path, tiny_pggan):
    return save_generator(tiny_pggan, tmp_path / "tiny.safetensors")


@pytest.fixture
def run(tmp_path, checkpoint, face_pngs):
    out = tmp_path / "run"
    assert main(["invert", "--checkpoint", str(checkpoint), "--images", str(face_pngs),
                 "--out", str(out), "--iterations", "5", "--codes", str(CODES), "--layer", "4",
                 "--perceptual", "none", "--quiet"]) == 0
    return out


def label_folder(tmp_path, size=16, value=None, mode="L"):
    """Label maps for img0..img2: left half class 0 (wall), right half class 1 (floor)."""
    folder = tmp_path / f"labels-{size}-{value}-{mode}"
    folder.mkdir(exist_ok=True)
    for i in range(3):
        labels = np.zeros((size, size), dtype=np.uint8)
        labels[:, size // 2:] = 1
        if value is not None:
            labels[:] = value
        if mode == "RGB":
            labels = np.stack([labels] * 3, axis=-1)
        write_png(folder / f"img{i}.png", labels)
    return folder


def error_line(capsys):
    err = capsys.readouterr().err.strip().splitlines()
    assert err and err[-1].startswith("mganprior: error: "), err
    return err[-1]


def test_attribute_writes_tables_arrays_and_figures(capsys, tmp_path, run):
    assert main(["attribute", str(run), "--labels", str(label_folder(tmp_path)), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert f"attribution: {run / 'attribution'}" in printed
    out = run / "attribution"
    rows = (out / "attribution.csv").read_text().splitlines()
    assert rows[0].startswith("image,code,rank,class,iou,alpha_zeroed_fraction")
    assert len(rows) == 1 + 3 * CODES
    meta = json.loads((out / "attribution.json").read_text())
    assert meta["settings"]["threshold"] == 0.2 and meta["settings"]["binarize"] == "otsu"
    assert meta["segmentation_source"].startswith("label maps in")
    assert meta["vocabulary"]["name"] == "scene-world"
    assert meta["summary"]["reproduction_error_max"] < 1.0
    for figure in ("heatmap.png", "histogram.png", "images/img0.png", "images/img2.png"):
        assert (out / "figures" / figure).stat().st_size > 1000
    # a rerun with other settings replaces the attribution whole, leaving no temporary folders
    assert main(["attribute", str(run), "--labels", str(label_folder(tmp_path)), "--quiet",
                 "--threshold", "1.0", "--relative", "codes", "--binarize", "quantile:0.8",
                 "--image-figures", "1"]) == 0
    meta = json.loads((out / "attribution.json").read_text())
    assert meta["settings"]["relative"] == "codes"
    assert sorted(p.name for p in (out / "figures" / "images").iterdir()) == ["img0.png"]
    assert sorted(p.name for p in run.iterdir() if p.name.startswith(".")) == [".locks"]


def test_attribute_with_a_user_smp_segmenter(capsys, tmp_path, run):
    import segmentation_models_pytorch as smp

    model = smp.Unet("resnet18", encoder_weights=None, classes=3, encoder_depth=3,
                     decoder_channels=(16, 8, 8))
    model.save_pretrained(str(tmp_path / "smp"))
    names = tmp_path / "classes.json"
    names.write_text(json.dumps(["sky", "ground", "thing"]))
    out = tmp_path / "attr"
    assert main(["attribute", str(run), "--segmenter-dir", str(tmp_path / "smp"),
                 "--label-names", str(names), "--segment", "target", "--out", str(out),
                 "--quiet"]) == 0
    meta = json.loads((out / "attribution.json").read_text())
    assert meta["vocabulary"]["names"] == ["sky", "ground", "thing"]
    assert "on the targets" in meta["segmentation_source"]
    assert main(["attribute", str(run), "--segmenter-dir", str(tmp_path / "smp"),
                 "--label-names", "scene-world", "--out", str(tmp_path / "other")]) == 2
    assert "predicts 3 classes but its vocabulary scene-world has 21" in error_line(capsys)
    assert not (tmp_path / "other").exists()


def _break_latents(run):
    (run / "images" / "img1" / "latents.safetensors").unlink()


def _break_checkpoint(run):
    path = json.loads((run / "config.json").read_text())["generator"]["checkpoint"]
    save_generator(make_tiny_pggan(seed=7), path)


@pytest.mark.parametrize("case, extra, message", [
    ("no run", [], "does not exist"),
    ("no config", [], "not a run directory"),
    ("no latents", [], "images/img1: latents.safetensors is missing"),
    ("changed checkpoint", [], "sha256"),
    ("other architecture", ["--generator", "digiface-dcgan64"], "not the run's generator"),
    ("other weights", ["--checkpoint", "OTHER"], "does not reproduce the run's reconstructions"),
    ("small labels", ["--labels", "SMALL"], "is 8x8 but the images are 16x16"),
    ("empty labels", ["--labels", "EMPTY"], "img0 is empty"),
    ("rgb labels", ["--labels", "RGB"], "single-channel"),
    ("missing labels", ["--labels", "MISSING"], "no label map for img2"),
    ("threshold zero", ["--threshold", "0"], "threshold must be in (0, inf)"),
    ("threshold negative", ["--threshold", "-0.5"], "threshold must be in (0, inf)"),
    ("bad binarize", ["--binarize", "median"], "binarize must be otsu"),
    ("target with labels", ["--labels", "GOOD", "--segment", "target"], "needs a segmenter"),
    ("unknown segmenter", ["--segmenter", "ade20k"], "named segmenters: scenes-segmenter64"),
    ("perceptual without vgg", ["--difference", "perceptual", "--vgg-weights", "/nowhere.pth"],
     "no such file"),
])
def test_bad_input_fails_with_one_line_and_writes_nothing(capsys, tmp_path, run, case, extra,
                                                          message):
    target = run
    if case == "no run":
        target = tmp_path / "nowhere"
    elif case == "no config":
        (run / "config.json").unlink()
    elif case == "no latents":
        _break_latents(run)
    elif case == "changed checkpoint":
        _break_checkpoint(run)
    other = save_generator(make_tiny_pggan(seed=3), tmp_path / "other.safetensors")
    replacements = {"OTHER": str(other),
                    "SMALL": str(label_folder(tmp_path, size=8)),
                    "EMPTY": str(label_folder(tmp_path, value=255)),
                    "RGB": str(label_folder(tmp_path, mode="RGB")),
                    "GOOD": str(label_folder(tmp_path))}
    if "MISSING" in extra:
        missing = label_folder(tmp_path)
        (missing / "img2.png").unlink()
        replacements["MISSING"] = str(missing)
    extra = [replacements.get(arg, arg) for arg in extra]
    if "--labels" not in extra and "--segmenter" not in extra:
        extra += ["--labels", str(label_folder(tmp_path, size=16))]
    assert main(["attribute", str(target), *extra, "--quiet"]) == 2
    assert message in error_line(capsys)
    assert not (run / "attribution").exists()


def test_a_failed_attribution_leaves_the_previous_one_in_place(capsys, tmp_path, run):
    good = label_folder(tmp_path)
    assert main(["attribute", str(run), "--labels", str(good), "--quiet"]) == 0
    before = (run / "attribution" / "attribution.csv").read_text()
    assert main(["attribute", str(run), "--labels", str(label_folder(tmp_path, value=255)),
                 "--quiet"]) == 2
    assert (run / "attribution" / "attribution.csv").read_text() == before
    other = tmp_path / "occupied"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    assert main(["attribute", str(run), "--labels", str(good), "--out", str(other)]) == 2
    assert "holds no attribution" in error_line(capsys)
    assert sorted(p.name for p in other.iterdir()) == ["notes.txt"]


def test_resize_labels_accepts_other_sizes(tmp_path, run):
    small = label_folder(tmp_path, size=8)
    assert main(["attribute", str(run), "--labels", str(small), "--resize-labels",
                 "--quiet"]) == 0
    shutil.rmtree(small)
