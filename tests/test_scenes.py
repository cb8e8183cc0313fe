"""The procedural scene world: determinism, exact labels, domain content, datasets."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mganprior.core.errors import InputError
from mganprior.scenes.datasets import HELD_OUT_SEED, render_many, rendered_dataset
from mganprior.scenes.render import DOMAINS, LABEL, Camera, Canvas, Face, box, render
from segmentation.vocabularies import SCENE_WORLD

CORE = {"bedroom": ("wall", "floor", "bed"), "conference_room": ("wall", "floor", "table",
                                                                  "chair"),
        "church_outdoor": ("sky", "grass", "building")}


@pytest.mark.parametrize("domain", list(DOMAINS))
def test_render_is_deterministic_and_seeds_differ(domain):
    image, labels = render(domain, 7, 32)
    again_image, again_labels = render(domain, 7, 32)
    other_image, _ = render(domain, 8, 32)
    assert image.dtype == np.uint8 and image.shape == (32, 32, 3)
    assert labels.dtype == np.uint8 and labels.shape == (32, 32)
    assert np.array_equal(image, again_image) and np.array_equal(labels, again_labels)
    assert np.abs(image.astype(int) - other_image.astype(int)).mean() > 5


@pytest.mark.parametrize("domain", list(DOMAINS))
def test_every_pixel_has_a_vocabulary_label_and_core_classes_appear(domain):
    core = [LABEL[name] for name in CORE[domain]]
    present = np.zeros(len(SCENE_WORLD))
    for seed in range(12):
        _, labels = render(domain, seed, 32)
        assert labels.max() < len(SCENE_WORLD)
        present += np.bincount(labels.ravel(), minlength=len(SCENE_WORLD)) > 0
    assert all(present[k] >= 11 for k in core), dict(zip(SCENE_WORLD.names, present, strict=True))
    assert (present > 0).sum() >= 8  # scenes are more than their core classes


@pytest.mark.parametrize("domain", list(DOMAINS))
def test_labels_are_the_block_majority_of_the_full_resolution_scene(domain):
    _, small = render(domain, 3, 16, supersample=4)
    _, full = render(domain, 3, 64, supersample=1)
    blocks = full.reshape(16, 4, 16, 4).transpose(0, 2, 1, 3).reshape(16, 16, 16)
    counts = (blocks[..., None] == np.arange(len(SCENE_WORLD))).sum(axis=2)
    assert np.array_equal(counts.argmax(axis=2), small)


def test_a_drawn_face_labels_exactly_its_projected_area():
    # A 2 x 1 rectangle on the plane z = 4 seen by a camera at the origin with focal 64 px
    # projects to a 32 x 16 px rectangle centred at (64, 64) in a 128 px canvas.
    camera = Camera(np.zeros(3), yaw=0.0, focal=64.0, center=(64.0, 64.0))
    canvas = Canvas(128, 1, camera, light=np.array([0, 0, -1.0]), ambient=1.0)
    face = Face(np.array([[-1, -0.5, 4], [1, -0.5, 4], [1, 0.5, 4], [-1, 0.5, 4]]),
                LABEL["painting"], (1.0, 0.0, 0.0), np.array([0, 0, -1.0]))
    canvas.face(face)
    labels = np.asarray(canvas.labels)
    rows, cols = np.nonzero(labels == LABEL["painting"])
    assert 32 * 16 <= len(rows) <= 33 * 17  # PIL fills the closed polygon, edges included
    assert (rows.min(), rows.max(), cols.min(), cols.max()) == (56, 72, 48, 80)
    assert np.asarray(canvas.rgb)[64, 64].tolist() == [255, 0, 0]


def test_a_face_behind_the_camera_is_clipped_not_mirrored():
    camera = Camera(np.zeros(3), yaw=0.0, focal=32.0, center=(32.0, 32.0))
    canvas = Canvas(64, 1, camera, light=np.array([0, 1.0, 0]), ambient=1.0)
    canvas.face(Face(np.array([[-1, -1, -3], [1, -1, -3], [1, 1, -3], [-1, 1, -3]]),
                     LABEL["door"], (1.0, 1.0, 1.0)))
    assert not (np.asarray(canvas.labels) == LABEL["door"]).any()


@pytest.mark.parametrize("order", [0, 1])
def test_the_nearer_box_occludes_the_farther_whatever_the_drawing_order(order):
    camera = Camera(np.zeros(3), yaw=0.0, focal=32.0, center=(32.0, 32.0))
    canvas = Canvas(64, 1, camera, light=np.array([0, 1.0, -1.0]), ambient=0.5)
    near = box((-0.5, -0.5, 3.0), (0.5, 0.5, 4.0), LABEL["table"], (1.0, 0.0, 0.0))
    far = box((-6.0, -6.0, 8.0), (6.0, 6.0, 9.0), LABEL["building"], (0.0, 0.0, 1.0))
    canvas.groups([near, far] if order else [far, near])
    labels = np.asarray(canvas.labels)
    assert labels[32, 32] == LABEL["table"]  # centre: the near box covers the far one
    assert labels[32, 12] == LABEL["building"]  # beside it the far box shows
    assert labels[1, 1] == 0  # beyond both: the canvas background


def test_unknown_domain_lists_the_domains():
    with pytest.raises(InputError, match="bedroom, conference_room, church_outdoor"):
        render("kitchen", 0)


def test_bad_size_is_refused():
    with pytest.raises(InputError, match="size"):
        render("bedroom", 0, size=4)


def test_render_many_matches_single_renders_in_parallel_too():
    serial, serial_labels = render_many("church_outdoor", range(70), 16, workers=1,
                                        progress=False)
    parallel, parallel_labels = render_many("church_outdoor", range(70), 16, workers=2,
                                            progress=False)
    assert np.array_equal(serial, parallel) and np.array_equal(serial_labels, parallel_labels)
    image, labels = render("church_outdoor", 69, 16)
    assert np.array_equal(serial[69], image) and np.array_equal(serial_labels[69], labels)


def test_rendered_dataset_cache_round_trips_and_recovers_from_damage(tmp_path):
    images, labels = rendered_dataset("bedroom", 3, 16, start=HELD_OUT_SEED, cache=tmp_path,
                                      progress=False)
    (entry,) = tmp_path.glob("*.npz")
    cached, cached_labels = rendered_dataset("bedroom", 3, 16, start=HELD_OUT_SEED,
                                             cache=tmp_path, progress=False)
    assert np.array_equal(images, cached) and np.array_equal(labels, cached_labels)
    entry.write_bytes(b"not an npz")
    again, _ = rendered_dataset("bedroom", 3, 16, start=HELD_OUT_SEED, cache=tmp_path,
                                progress=False)
    assert np.array_equal(images, again)


def test_publish_copies_generators_and_the_segmenter(tmp_path, tiny_pggan):
    import json

    from inversion.generators import load_generator_file, save_generator
    from mganprior.scenes.publish import GENERATOR_NAMES, publish

    source = tmp_path / "trained"
    for domain in GENERATOR_NAMES:
        save_generator(tiny_pggan, source / domain / "generator.safetensors")
        (source / domain / "training.json").write_text(json.dumps(
            {"steps": 7, "seconds": 1.5, "device": "cpu", "config": {"batch": 4}}))
    with pytest.raises(InputError, match="train the segmenter first"):
        publish(source, tmp_path / "weights")
    model = source / "segmenter-finetune2" / "model"
    model.mkdir(parents=True)
    (model / "model.safetensors").write_bytes(b"x")
    (model / "README.md").write_text("smp's card")
    publish(source, tmp_path / "weights")
    copied = load_generator_file(tmp_path / "weights" / "church-pggan64.safetensors")
    assert torch.equal(copied.output.weight, tiny_pggan.output.weight)
    config = json.loads((tmp_path / "weights" / "church-pggan64.json").read_text())
    assert config["training"]["steps"] == 7 and config["training"]["domain"] == "church_outdoor"
    assert sorted(p.name for p in (tmp_path / "weights" / "scenes-segmenter64").iterdir()) == \
        ["model.safetensors"]


def test_nearest_neighbour_known_answer():
    from mganprior.scenes.evaluate import nearest

    bank = np.zeros((3, 2, 2, 3), dtype=np.uint8)
    bank[1] += 10
    bank[2] += 100
    queries = np.stack([bank[2] + 4, bank[0] + 1]).astype(np.uint8)
    index, distance = nearest(queries, bank)
    assert index.tolist() == [2, 0]
    assert distance.tolist() == pytest.approx([4.0, 1.0])
