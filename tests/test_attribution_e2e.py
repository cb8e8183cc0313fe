"""End to end on the scene world: invert rendered bedrooms with bedroom-pggan64, attribute the codes
with scenes-segmenter64 and with the renderer's exact labels."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from analysis.attribution_files import AttributionDirectory
from inversion.images import load_images, save_png
from inversion.losses import PerceptualStatus
from inversion.recipes import get_recipe
from inversion.runs import RunSettings, run_inversion
from inversion.tasks import Inversion
from mganprior.attribution import SegmentationChoice, attribute_run
from mganprior.scenes.datasets import HELD_OUT_SEED
from mganprior.scenes.render import render
from mganprior.zoo import load_generator

pytestmark = pytest.mark.slow
SEEDS = [HELD_OUT_SEED + 11, HELD_OUT_SEED + 12, HELD_OUT_SEED + 13]


@pytest.fixture(scope="module")
def bedroom_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bedrooms")
    (folder / "images").mkdir()
    (folder / "labels").mkdir()
    truth = {}
    for seed in SEEDS:
        rgb, labels = render("bedroom", seed)
        save_png(rgb, folder / "images" / f"bedroom-{seed}.png")
        save_png(labels, folder / "labels" / f"bedroom-{seed}.png")
        truth[f"bedroom-{seed}"] = labels
    loaded = load_generator("bedroom-pggan64", device="cpu")
    recipe = get_recipe("adam", "inversion").with_overrides(iterations=60)
    settings = RunSettings(loaded.generator, loaded.info, Inversion(), recipe,
                           PerceptualStatus(None, "none"), batch_size=3, progress=False)
    images = load_images([folder / "images"], loaded.generator.resolution)
    run, summary = run_inversion(settings, images, folder / "run", log=lambda _: None)
    assert summary["ok"] == 3
    return run.path, folder / "labels", truth


def test_scene_segmenter_attribution_is_sane(bedroom_run):
    run, _, truth = bedroom_run
    result, out = attribute_run(run, SegmentationChoice(segmenter="scenes-segmenter64"),
                                progress=False, log=lambda _: None)
    assert out == run / "attribution" and (out / "attribution.csv").is_file()
    assert result.codes == 20 and result.batch == 3
    assert result.reproduction_error_max < 1.0  # the codes re-render the saved images
    result = AttributionDirectory(out).load()
    assert (result.zeroed_fraction > 0).any()
    assigned = result.assigned != -1
    assert int(assigned.sum()) >= 10, result.summary()
    for b, name in enumerate(result.names):
        segmented = set(result.segmentation[b].unique().tolist())
        for klass in result.assigned[b][assigned[b]].tolist():
            assert klass in segmented
        # the segmenter sees a reconstruction of a render: it agrees with the exact labels
        accuracy = float((result.segmentation[b].numpy() == truth[name]).mean())
        assert accuracy > 0.5, (name, accuracy)
    # every assigned code changed something, and the changed region overlaps its class
    assert (result.binary.flatten(2).any(dim=2) | ~assigned).all()
    assert (result.assigned_iou[assigned] >= 0.05).all()


def test_exact_labels_attribute_codes_to_classes_in_the_scene(bedroom_run, tmp_path):
    run, labels, truth = bedroom_run
    _, out = attribute_run(run, SegmentationChoice(labels_dir=labels), out=tmp_path / "exact",
                           image_figures=1, progress=False, log=lambda _: None)
    result = AttributionDirectory(out).load()
    for b, name in enumerate(result.names):
        in_scene = set(np.unique(truth[name]).tolist())
        chosen = set(result.assigned[b][result.assigned[b] != -1].tolist())
        assert chosen and chosen <= in_scene
    assert torch.equal(result.segmentation, torch.from_numpy(
        np.stack([truth[name] for name in result.names])).long())
    assert (tmp_path / "exact" / "figures" / "images").is_dir()
