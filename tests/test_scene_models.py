"""The committed scene-world models: they load, sample in range, segment into the right classes."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

import mganprior.zoo as zoo
from mganprior.core.errors import InputError
from mganprior.core.pixels import from_uint8
from mganprior.scenes.datasets import HELD_OUT_SEED, rendered_dataset
from mganprior.scenes.publish import GENERATOR_NAMES
from segmentation.metrics import confusion_matrix, iou_report
from segmentation.vocabularies import SCENE_WORLD

CORE = {"bedroom-pggan64": ("wall", "floor", "bed"),
        "conference-pggan64": ("wall", "floor", "table", "chair"),
        "church-pggan64": ("sky", "grass", "building"),
        "bedroom-stylegan2-64": ("wall", "floor", "bed")}
ARCHITECTURE = {"pggan": (128, ["layer9", "layer10"]),
                "stylegan2": (64, ["b64.conv0", "b64"])}


@pytest.fixture(scope="module")
def segmenter():
    return zoo.load_segmenter("scenes-segmenter64", device="cpu")


def test_committed_weights_stay_under_the_size_budget():
    total = sum(p.stat().st_size for p in zoo.SCENE_WEIGHTS.rglob("*") if p.is_file())
    assert total < 40 * 2**20, f"{total / 2**20:.1f} MB"


@pytest.mark.parametrize("name", list(CORE))
def test_scene_generator_samples_are_in_range_and_show_the_domain(name, segmenter):
    loaded = zoo.load_generator(name, device="cpu")
    generator = loaded.generator
    z_dim, deepest = ARCHITECTURE[generator.family]
    assert (generator.resolution, generator.z_dim) == (64, z_dim)
    assert [layer.name for layer in generator.layers][-2:] == deepest
    images = generator.sample(16, seed=0)
    assert images.shape == (16, 3, 64, 64)
    assert (images.abs() <= 1.05).float().mean() > 0.99  # unclamped output
    maps = segmenter.segment(images.clamp(-1, 1))
    fractions = torch.bincount(maps.flatten(), minlength=len(SCENE_WORLD)) / maps.numel()
    for cls in CORE[name]:
        assert fractions[SCENE_WORLD.index(cls)] > 0.02, (cls, fractions.tolist())


def test_segmenter_reads_held_out_renders(segmenter):
    images, labels = [], []
    for domain in GENERATOR_NAMES:
        x, y = rendered_dataset(domain, 20, 64, start=HELD_OUT_SEED, progress=False)
        images.append(x)
        labels.append(y)
    x = from_uint8(np.concatenate(images))
    y = torch.from_numpy(np.concatenate(labels).astype(np.int64))
    report = iou_report(confusion_matrix(segmenter.segment(x), y, len(SCENE_WORLD)),
                        SCENE_WORLD.names)
    assert report.pixel_accuracy > 0.9 and report.mean > 0.7, report.as_dict()


def test_segmenter_label_count_mismatch_is_named():
    with pytest.raises(InputError, match="predicts 21 classes but its vocabulary ade20k-150"):
        zoo.load_segmenter("scenes-segmenter64", labels="ade20k-150")


def test_unknown_segmenter_lists_the_named_ones():
    with pytest.raises(InputError, match="named segmenters: scenes-segmenter64"):
        zoo.load_segmenter("deeplab")


def test_corrupt_or_missing_weights_fail_with_one_line_naming_the_file(tmp_path, monkeypatch):
    damaged = tmp_path / "weights"
    shutil.copytree(zoo.SCENE_WEIGHTS, damaged)
    target = damaged / "church-pggan64.safetensors"
    target.write_bytes(target.read_bytes()[:1000])
    monkeypatch.setattr(zoo, "SCENE_WEIGHTS", damaged)
    with pytest.raises(InputError, match=r"church-pggan64\.safetensors is corrupt"):
        zoo.load_generator("church-pggan64")
    target.unlink()
    with pytest.raises(InputError, match=r"church-pggan64\.safetensors is missing"):
        zoo.load_generator("church-pggan64")
    (damaged / "scenes-segmenter64" / "model.safetensors").unlink()
    with pytest.raises(InputError, match=r"model\.safetensors is missing"):
        zoo.load_segmenter("scenes-segmenter64")


def test_the_stylegan2_prior_runs_a_layer_study_with_attribution(tmp_path, capsys):
    import csv

    from mganprior.cli import main

    assert main(["zoo"]) == 0
    assert "bedroom-stylegan2-64" in capsys.readouterr().out
    out = tmp_path / "study"
    assert main(["layers", "--generator", "bedroom-stylegan2-64", "--count", "1",
                 "--tasks", "inversion", "--layers", "b16", "--codes", "4", "--iterations", "3",
                 "--baselines", "z,w+",
                 "--segmenter", "scenes-segmenter64", "--perceptual", "none", "--quiet",
                 "--out", str(out)]) == 0
    with (out / "layers.csv").open() as handle:
        layers = {row["layer"] for row in csv.DictReader(handle)}
    assert layers == {"single-code", "single-code w+", "b16"}
    with (out / "attribution.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert {row["layer"] for row in rows} == {"b16"}
    assert sum(int(row["codes_assigned"]) for row in rows) == 4  # every code counted once
