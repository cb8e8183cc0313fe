"""Semantic directions and edits: known answers for SeFa, boundary training and edits, the files
and the commands, and one-line refusals."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from analysis.directions import (
    Direction,
    brightness,
    load_boundary,
    parse_attribute,
    project_out,
    sefa,
    sefa_directions,
    train_boundary,
)
from analysis.edit_files import EditDirectory
from analysis.editing import EditSettings, edit, moved_codes
from helpers import (
    BrightnessToy,
    ThresholdSegmenter,
    make_tiny_stylegan2,
    rendered_targets,
    toy_inversion,
)
from inversion.composition import render
from inversion.engine import QUIET, invert
from inversion.recipes import get_recipe
from inversion.tasks import Inversion
from mganprior.core.errors import InputError

GRAM = np.array([[1.0, 0.5, 0.0], [0.5, 1.0, 0.0], [0.0, 0.0, 1.0]])  # eigenvalues 1.5, 1, 0.5


def angle(a, b) -> float:
    a, b = np.asarray(a, float), np.asarray(b, float)
    return math.degrees(math.acos(min(1.0, abs(a @ b) / np.linalg.norm(a) / np.linalg.norm(b))))


# -- SeFa -----------------------------------------------------------------------------------------
def test_sefa_returns_the_known_eigenvectors_in_order():
    # four output units (rows), each rescaled: SeFa normalises every unit's weight vector, so
    # A^T A = e1e1' + 2 e2e2' + (e1+e3)(e1+e3)'/2 with eigenvalues 2, 1 +- 1/sqrt(2)
    weight = torch.tensor([[2.0, 0, 0], [0, 5.0, 0], [0, 0.3, 0], [7.0, 0, 7.0]])
    vectors, values = sefa(weight, 3)
    np.testing.assert_allclose(values, [2.0, 1 + 0.5 ** 0.5, 1 - 0.5 ** 0.5], atol=1e-9)
    assert values.sum() == pytest.approx(4)  # one per output unit
    expected = [[0, 1, 0], [1 + 2 ** 0.5, 0, 1], [1 - 2 ** 0.5, 0, 1]]
    for vector, truth in zip(vectors, expected, strict=True):
        assert angle(vector, truth) < 1e-6


def test_sefa_reads_each_family_s_first_layer(tiny_pggan, tiny_dcgan):
    directions = sefa_directions(tiny_dcgan, 2)
    assert [d.space for d in directions] == ["z", "z"] and directions[0].vector.shape == (8,)
    assert directions[0].meta["eigenvalue"] >= directions[1].meta["eigenvalue"]
    assert len(sefa_directions(tiny_pggan, 3)) == 3
    styles = sefa_directions(make_tiny_stylegan2(), 2, layers="0,b8.conv1")
    assert styles[0].space == "w" and styles[0].vector.shape == (8,)
    with pytest.raises(InputError, match="layers 'b99' is not a style layer"):
        make_tiny_stylegan2().latent_weight("b99")


# -- InterFaceGAN ---------------------------------------------------------------------------------
def test_a_trained_boundary_recovers_a_linear_attribute():
    rng = np.random.default_rng(0)
    truth = rng.normal(size=16)
    truth /= np.linalg.norm(truth)
    latents = rng.normal(size=(6000, 16))
    scores = latents @ truth + 0.05 * rng.normal(size=6000)
    fit = train_boundary(latents, scores, fraction=0.02)
    assert angle(fit.normal, truth) < 12 and fit.normal @ truth > 0
    assert fit.accuracy > 0.95 and fit.chosen == 240


def test_too_few_samples_or_a_constant_attribute_are_refused():
    latents = np.random.default_rng(0).normal(size=(100, 4))
    with pytest.raises(InputError, match=r"samples: 100 samples at fraction 0\.02 give 2 per side"):
        train_boundary(latents, latents[:, 0])
    with pytest.raises(InputError, match="does not vary"):
        train_boundary(latents, np.ones(100), fraction=0.2)


def test_conditioning_projects_other_boundaries_out():
    rng = np.random.default_rng(1)
    a, b, c = rng.normal(size=(3, 8))
    conditioned = project_out(a, [b, c])
    assert abs(conditioned @ b) < 1e-9 and abs(conditioned @ c) < 1e-9
    assert np.linalg.norm(conditioned) == pytest.approx(1)


def test_attributes_by_name(tiny_pggan):
    assert parse_attribute("brightness") is brightness
    score = parse_attribute("class:bright", ThresholdSegmenter())
    assert score(torch.ones(2, 3, 4, 4)).tolist() == [1.0, 1.0]
    with pytest.raises(InputError, match="attribute 'smile' is unknown"):
        parse_attribute("smile")
    with pytest.raises(InputError, match="needs a segmenter"):
        parse_attribute("class:bed")
    with pytest.raises(InputError, match="class 'bed' is not in vocabulary brightness"):
        parse_attribute("class:bed", ThresholdSegmenter())


# -- boundary files -------------------------------------------------------------------------------
def test_boundary_files_are_checked_and_normalised(tmp_path, tiny_pggan):
    path = tmp_path / "pggan_bedroom_bed_boundary.npy"
    np.save(path, np.full((1, 8), 2.0))
    notes: list[str] = []
    direction = load_boundary(path, tiny_pggan, notes=notes)
    assert direction.space == "z" and np.linalg.norm(direction.vector) == pytest.approx(1)
    assert notes == [f"direction {path.name} had norm 5.657; it was normalised"]
    np.save(tmp_path / "short.npy", np.ones((1, 5)))
    with pytest.raises(InputError, match="has 5 numbers but the generator's z has 8"):
        load_boundary(tmp_path / "short.npy", tiny_pggan)
    np.save(tmp_path / "x_w_boundary.npy", np.ones((1, 8)))
    with pytest.raises(InputError, match="has no W space"):
        load_boundary(tmp_path / "x_w_boundary.npy", tiny_pggan)
    saved = Direction("d", np.eye(8)[2], "z", "sefa", {"eigenvalue": 2.0}).save(tmp_path / "o")
    array = np.load(saved)
    assert array.shape == (1, 8) and array.dtype == np.float64
    assert json.loads(saved.with_suffix(".json").read_text())["eigenvalue"] == 2.0


# -- edits ----------------------------------------------------------------------------------------
def test_an_edit_of_one_region_s_brightness_by_hand():
    toy = BrightnessToy().eval()
    inversion = toy_inversion(torch.zeros(1, 1, 2))
    direction = Direction("top", np.array([1.0, 0.0]), "z", "file")
    settings = EditSettings(steps=5, range=1.0, code_sets="all")
    result = edit(toy, inversion, direction, settings, segmenter=ThresholdSegmenter(),
                  progress=False)
    assert result.ts.tolist() == [-1.0, -0.5, 0.0, 0.5, 1.0]
    # the top half's red is t: it is "bright" (above 0.25) at t = 0.5 and 1
    assert result.fractions[0, 0, :, 1].tolist() == [0.0, 0.0, 0.0, 0.5, 0.5]
    assert bool(result.monotone(1)[0, 0])
    torch.testing.assert_close(result.class_changes()[0, 0], torch.tensor([-0.5, 0.5]))
    expected = torch.zeros(4, 4)
    expected[:2] = 1 / 3  # the largest |x_t - x_0|: red moves by 1 of 3 channels, top only
    torch.testing.assert_close(result.changed[0, 0], expected)
    assert result.changed_fraction()[0, 0] == 0.5


def test_moving_one_code_moves_only_its_part():
    codes = torch.tensor([[[0.3, 0.0], [0.0, 0.3]]])  # code 0 paints the top, code 1 the bottom
    direction = Direction("both", np.array([1.0, 1.0]) / math.sqrt(2), "z", "file")
    result = edit(BrightnessToy().eval(), toy_inversion(codes), direction,
                  EditSettings(steps=3, range=0.5, code_sets="each"), progress=False)
    assert result.code_sets == ["code 0", "code 1"]
    # alpha 1 each: code n's move reaches both halves through its own features only
    assert result.changed[0, 0, :2].max() > 0 and result.changed[0, 1, 2:].max() > 0
    assert result.changed[0, 0, 2:].max() > 0  # its z1 component also paints the bottom


def test_absolute_mode_places_the_code_at_a_signed_distance():
    codes = torch.tensor([[[3.0, 1.0]]])
    moved = moved_codes(codes, torch.tensor([1.0, 0.0]), -2.0, torch.tensor([True]), "absolute")
    assert moved.tolist() == [[[-2.0, 1.0]]]


def test_t_zero_reproduces_the_inversion_exactly(tiny_pggan):
    targets = rendered_targets(tiny_pggan)
    recipe = get_recipe("adam", "inversion").with_overrides(iterations=3, codes=3, layer=4)
    inversion = invert(tiny_pggan, targets, Inversion(), recipe, seeds=[0, 1], options=QUIET)
    direction = sefa_directions(tiny_pggan, 1)[0]
    result = edit(tiny_pggan, inversion, direction, EditSettings(steps=5, range=2.0),
                  progress=False)
    with torch.no_grad():
        again = render(tiny_pggan, inversion.codes, inversion.alphas, inversion.layer,
                       "sum").clamp(-1, 1)
    for s in range(len(result.code_sets)):
        assert torch.equal(result.frames[:, s, 2], again)
    torch.testing.assert_close(result.frames[:, 0, 2], inversion.reconstructions)


def test_a_direction_in_another_space_than_the_codes_is_refused():
    generator = make_tiny_stylegan2()
    targets = rendered_targets(generator)
    recipe = get_recipe("adam", "inversion").with_overrides(iterations=2, codes=2, layer="b8")
    inversion = invert(generator, targets, Inversion(), recipe, seeds=[0, 1], options=QUIET)
    w_direction = sefa_directions(generator, 1)[0]
    with pytest.raises(InputError, match=r"lives in w .* but the run's codes live in z"):
        edit(generator, inversion, w_direction, progress=False)
    in_w = invert(generator, targets, Inversion(), recipe.with_overrides(latent_space="w+"),
                  seeds=[0, 1], options=QUIET)
    result = edit(generator, in_w, w_direction, EditSettings(steps=3, code_sets="all"),
                  progress=False)  # a W direction moves every layer of W+ codes
    assert result.frames.shape == (2, 1, 3, 3, 16, 16)


# -- files and commands ---------------------------------------------------------------------------
@pytest.fixture
def tiny_run(tmp_path, tiny_pggan, face_pngs) -> tuple[str, Path]:
    """A saved tiny PGGAN and a 2-code run of it on the face PNGs: (checkpoint, run dir)."""
    from inversion.generators import save_generator
    from mganprior.cli import main

    checkpoint = str(save_generator(tiny_pggan, tmp_path / "tiny.safetensors"))
    run = tmp_path / "run"
    assert main(["invert", "--checkpoint", checkpoint, "--images", str(face_pngs), "--out",
                 str(run), "--iterations", "3", "--codes", "2", "--quiet"]) == 0
    return checkpoint, run


def test_directions_edit_and_report_from_the_command_line(capsys, tmp_path, tiny_run):
    from mganprior.cli import main

    checkpoint, run = tiny_run
    assert main(["directions", "sefa", "--checkpoint", checkpoint, "--count", "2", "--out",
                 str(tmp_path / "dirs")]) == 0
    assert "sefa_00.npy (sefa, space z, eigenvalue" in capsys.readouterr().out
    assert main(["directions", "interfacegan", "--checkpoint", checkpoint, "--attribute",
                 "brightness", "--samples", "400", "--fraction", "0.05", "--out",
                 str(tmp_path / "dirs")]) == 0
    assert "brightness.npy (interfacegan, space z, accuracy" in capsys.readouterr().out
    assert main(["edit", str(run), "--direction", str(tmp_path / "dirs" / "brightness.npy"),
                 "--steps", "3", "--quiet"]) == 0
    out = run / "edits" / "brightness"
    edits = EditDirectory(out)
    assert edits.exists() and edits.animation("img0").stat().st_size > 100
    assert edits.strip("img2").is_file() and edits.figure("changed-img1").is_file()
    loaded = edits.load()
    assert loaded.code_sets == ["all", "code 0", "code 1"] and loaded.frames.shape[:3] == (3, 3, 3)
    assert main(["report", str(run), "--out", str(tmp_path / "r.html")]) == 0
    html = (tmp_path / "r.html").read_text()
    assert "Edits: brightness" in html and "data:image/gif;base64" in html


def test_bad_edit_input_gets_one_line_and_writes_nothing(capsys, tmp_path, tiny_pggan,
                                                         tiny_run):
    from mganprior.cli import main

    checkpoint, run = tiny_run
    np.save(tmp_path / "wrong.npy", np.ones((1, 3)))
    np.save(tmp_path / "good.npy", np.eye(1, tiny_pggan.z_dim))
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("keep")
    capsys.readouterr()
    cases = [
        (["edit", str(run), "--direction", str(tmp_path / "good.npy"), "--out", str(busy)],
         f"--out {busy} is not empty and holds no edits"),
        (["edit", str(run), "--direction", str(tmp_path / "wrong.npy")], "has 3 numbers"),
        (["edit", str(run), "--direction", str(tmp_path / "missing.npy")], "does not exist"),
        (["edit", str(tmp_path), "--direction", str(tmp_path / "wrong.npy")], "holds no run"),
        (["edit", str(run), "--direction", str(tmp_path / "wrong.npy"), "--steps", "1"],
         "--steps must be an integer in [2, 1000]"),
        (["directions", "interfacegan", "--checkpoint", checkpoint, "--attribute", "smile",
          "--out", str(tmp_path / "d")], "--attribute 'smile' is unknown"),
    ]
    for args, message in cases:
        assert main(args) == 2, args
        assert message in capsys.readouterr().err
    assert not (run / "edits").exists() and not (tmp_path / "d").exists()
    assert [f.name for f in busy.iterdir()] == ["notes.txt"]
