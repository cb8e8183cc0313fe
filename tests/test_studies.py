"""Studies: the grid, its cost, the tidy table, resuming cell by cell, and the command line."""

from __future__ import annotations

import csv
import json
import shutil

import pytest

from analysis.studies import (
    SINGLE_CODE,
    TABLE_COLUMNS,
    StudyCell,
    aggregate,
    best_cells,
    expand_grid,
    select_layers,
    study_cost,
    tidy_rows,
)
from helpers import make_tiny_pggan, make_tiny_stylegan2
from inversion.generators import PGGANGenerator, save_generator
from mganprior.cli import main
from mganprior.core.errors import InputError
from mganprior.studies import StudySpec, run_study


@pytest.fixture
def checkpoint(tmp_path, tiny_pggan):
    return str(save_generator(tiny_pggan, tmp_path / "tiny.safetensors"))


# -- the grid ----------------------------------------------------------------------------------
def test_grid_expands_generators_tasks_layers_and_codes_in_order(tiny_pggan, tiny_dcgan):
    listings = {"p": tiny_pggan.layers, "d": tiny_dcgan.layers}
    cells = expand_grid(listings, ["inversion", "inpainting"], "all", [5])
    assert len(cells) == 2 * (1 + 6) + 2 * (1 + 2)  # single code + every layer, per task
    first = cells[:7]
    assert [c.layer.index for c in first] == [0, 1, 2, 3, 4, 5, 6]
    assert [c.codes for c in first] == [1, 5, 5, 5, 5, 5, 5]
    assert all(c.generator == "p" and c.task == "inversion" for c in first)
    assert first[0].single_code and first[0].label == SINGLE_CODE
    assert len({c.key for c in cells}) == len(cells)
    assert cells[-1].key == "d/inpainting/02-main.5-n5"


def test_grid_layer_lists_codes_sweeps_and_errors(tiny_pggan):
    listing = tiny_pggan.layers
    assert [layer.name for layer in select_layers(listing, "-1,2,layer2")] == ["layer2",
                                                                                "layer6"]
    cells = expand_grid({"p": listing}, ["inversion"], "3", [20, 1, 5, 5])
    assert [(c.layer.index, c.codes) for c in cells] == [(0, 1), (3, 1), (3, 5), (3, 20)]
    no_baseline = expand_grid({"p": listing}, ["inversion"], "z,4", [3], single_code=False)
    assert [(c.layer.index, c.codes) for c in no_baseline] == [(0, 1), (4, 3)]
    with pytest.raises(InputError, match="layer 'layer9' is not a composable layer; layers: 0 z"):
        select_layers(listing, "layer9")
    with pytest.raises(InputError, match="positive"):
        expand_grid({"p": listing}, ["inversion"], "all", [0])
    assert study_cost(cells, 3, 100) == 4 * 3 * 100
    assert study_cost(cells, 2, {c: c.codes for c in cells}) == (1 + 1 + 5 + 20) * 2


def test_tidy_rows_and_aggregates_known_answer(tiny_pggan):
    cell = StudyCell("p", "inversion", tiny_pggan.layers[2], 4)
    records = [{"image": "a", "status": "ok", "psnr": 20.0, "ssim": 0.5, "perceptual": None},
               {"image": "b", "status": "ok", "psnr": 30.0, "ssim": 0.7},
               {"image": "c", "status": "failed", "psnr": None, "ssim": None}]
    rows = tidy_rows(cell, records, 16)
    assert len(rows) == 4 and tuple(rows[0]) == TABLE_COLUMNS
    assert rows[0] == {"generator": "p", "task": "inversion", "layer": "layer2",
                       "layer_index": 2, "layer_shape": "16x4x4", "codes": 4,
                       "resolution": 16, "image": "a", "metric": "psnr", "value": 20.0,
                       "tune": 0}
    stats = {row["metric"]: row for row in aggregate(rows)}
    assert stats["psnr"]["mean"] == 25.0 and stats["psnr"]["std"] == 5.0
    assert stats["ssim"]["min"] == 0.5 and stats["ssim"]["images"] == 2
    single = tidy_rows(StudyCell("p", "inversion", tiny_pggan.layers[0], 1),
                       [{"image": "a", "status": "ok", "psnr": 40.0, "ssim": 0.9}], 16)
    best = best_cells(aggregate(rows + single))
    assert best[("p", "inversion")]["layer"] == "layer2"  # the baseline is never "best layer"


def test_baselines_in_several_latent_spaces_are_cells_of_their_own():
    generator = make_tiny_stylegan2()
    baselines = {"s": [(space, generator.in_space(space).layers[0])
                       for space in ("z", "w", "w+")]}
    cells = expand_grid({"s": generator.layers}, ["inversion"], "b8", [3], baselines=baselines)
    assert [(c.label, c.latent_space, c.layer.shape[0], c.codes) for c in cells] == [
        (SINGLE_CODE, "z", 8, 1), (f"{SINGLE_CODE} w", "w", 8, 1),
        (f"{SINGLE_CODE} w+", "w+", 8 * generator.num_ws, 1), ("b8", "z", 8, 3)]
    assert [c.key for c in cells] == ["s/inversion/00-z-n1", "s/inversion/00-w-n1",
                                      "s/inversion/00-wplus-n1", "s/inversion/03-b8-n3"]
    assert all(StudyCell.from_dict(c.to_dict()) == c for c in cells)
    in_w = expand_grid({"s": generator.in_space("w").layers}, ["inversion"], "b8", [3],
                       latent_space="w")
    assert [c.key for c in in_w] == ["s/inversion/00-w-n1", "s/inversion/03-b8-w-n3"]


def test_a_stylegan2_study_with_z_w_and_w_plus_baselines(tmp_path):
    from helpers import write_png

    generator = make_tiny_stylegan2()
    checkpoint = str(save_generator(generator, tmp_path / "sg2.safetensors"))
    folder = tmp_path / "images"
    folder.mkdir()
    for i, image in enumerate(generator.sample(2, seed=3).clamp(-1, 1)):
        write_png(folder / f"im{i}.png", ((image.permute(1, 2, 0) + 1) * 127.5).round()
                  .byte().numpy())
    spec = spec_for(checkpoint, tasks=["inversion"], layers="b8", baselines=["z", "w", "w+"])
    outcome = run_study(spec, [folder], tmp_path / "study", progress=False, log=lambda _: None)
    spaces = {c.label: json.loads((tmp_path / "study" / "cells" / c.key / "config.json")
                                  .read_text())["recipe"]["latent_space"] for c in outcome.cells}
    assert spaces == {SINGLE_CODE: "z", f"{SINGLE_CODE} w": "w", f"{SINGLE_CODE} w+": "w+",
                      "b8": "z"}
    with (tmp_path / "study" / "layers.csv").open() as handle:
        labels = {row["layer"] for row in csv.DictReader(handle)}
    assert labels == set(spaces)
    assert (tmp_path / "study" / "figures" / "psnr_vs_layer.png").stat().st_size > 1000
    with pytest.raises(InputError, match=r"baselines w: not a latent space of this pggan "
                                         r"generator; spaces: z"):
        run_study(spec_for(str(save_generator(make_tiny_pggan(), tmp_path / "p.safetensors")),
                           baselines=["z", "w"]), [folder], tmp_path / "other",
                  progress=False, log=lambda _: None)


# -- running a study ---------------------------------------------------------------------------
def spec_for(checkpoint, **overrides):
    settings = {"kind": "layers", "generators": [checkpoint],
                "tasks": ["inversion", "inpainting"], "layers": "2,4", "codes": [2],
                "iterations": 3, "perceptual": "none", "batch_size": 2}
    return StudySpec(**(settings | overrides))


def test_tiny_study_writes_the_table_summary_and_figures(tmp_path, checkpoint, face_pngs):
    outcome = run_study(spec_for(checkpoint), [face_pngs], tmp_path / "study", progress=False,
                        log=lambda _: None)
    out = tmp_path / "study"
    assert len(outcome.cells) == 2 * 3 and len(outcome.ran) == 6
    with (out / "layers.csv").open() as handle:
        table = list(csv.DictReader(handle))
    assert tuple(table[0]) == TABLE_COLUMNS
    keys = {(r["layer"], r["task"], r["image"], r["metric"]) for r in table}
    assert len(table) == len(keys) == 3 * 2 * 3 * 2  # (layer, task, image, metric), once each
    assert {r["layer"] for r in table} == {SINGLE_CODE, "layer2", "layer4"}
    summary = json.loads((out / "summary.json").read_text())
    assert summary["done"] == summary["total"] == 6
    assert {row["task"] for row in summary["best_layer_by_psnr"]} == {"inversion", "inpainting"}
    for name in ("psnr_vs_layer.png", "ssim_vs_layer.png", "grid-inversion.png",
                 "grid-inpainting.png"):
        assert (out / "figures" / name).stat().st_size > 1000
    config = json.loads((out / "cells" / outcome.cells[1].key / "config.json").read_text())
    assert config["codes"] == 2 and config["layer"]["name"] == "layer2"


def test_a_study_resumes_cell_by_cell(tmp_path, checkpoint, face_pngs):
    out = tmp_path / "study"
    spec = spec_for(checkpoint, tasks=["inversion"])
    first = run_study(spec, [face_pngs], out, progress=False, log=lambda _: None)
    results = {c.key: (out / "cells" / c.key / "results.jsonl").read_text() for c in first.cells}
    again = run_study(spec, [face_pngs], out, progress=False, log=lambda _: None)
    assert again.ran == []  # nothing is recomputed
    assert results == {k: (out / "cells" / k / "results.jsonl").read_text() for k in results}
    # an interrupted study: one cell never started, one stopped after its first image (its
    # other image folders never appeared; the stale index lines are corrected from the folders)
    gone, partial = first.cells[2], first.cells[1]
    shutil.rmtree(out / "cells" / gone.key)
    lines = results[partial.key].splitlines(keepends=True)
    kept = json.loads(lines[0])["image"]
    for folder in (out / "cells" / partial.key / "images").iterdir():
        if folder.name != kept:
            shutil.rmtree(folder)
    resumed = run_study(spec, [face_pngs], out, progress=False, log=lambda _: None)
    assert sorted(resumed.ran) == sorted([gone.key, partial.key])
    assert (out / "cells" / partial.key / "results.jsonl").read_text().splitlines()[0] == \
        lines[0].rstrip("\n")
    assert json.loads((out / "summary.json").read_text())["done"] == 3


def test_cost_cap_dry_run_and_changed_settings(tmp_path, checkpoint, face_pngs):
    out = tmp_path / "study"
    logged = []
    planned = run_study(spec_for(checkpoint), [face_pngs], out, dry_run=True, progress=False,
                        log=logged.append)
    assert planned.summary == {"dry_run": True, "pending": 6}
    assert "6 cells x 3 images (54 image-iterations)" in logged[0]
    assert not out.exists()
    with pytest.raises(InputError, match=r"still needs 54 image-iterations.*above max_cost 50"):
        run_study(spec_for(checkpoint), [face_pngs], out, max_cost=50, progress=False,
                  log=lambda _: None)
    run_study(spec_for(checkpoint, tasks=["inversion"]), [face_pngs], out, progress=False,
              log=lambda _: None)
    with pytest.raises(InputError, match=r"other settings.*iterations: 3 vs 4"):
        run_study(spec_for(checkpoint, tasks=["inversion"], iterations=4), [face_pngs], out,
                  progress=False, log=lambda _: None)


def test_cross_domain_resizes_images_and_says_so(tmp_path, checkpoint, face_pngs):
    big = PGGANGenerator(resolution=32, z_dim=8, channels=[16, 12, 8, 8]).eval()
    other = str(save_generator(big, tmp_path / "big32.safetensors"))
    spec = StudySpec(kind="cross-domain", generators=[checkpoint, other], layers="all",
                     codes=[2], iterations=2, perceptual="none")
    outcome = run_study(spec, [face_pngs], tmp_path / "cross", progress=False,
                        log=lambda _: None)
    assert {r["resolution"] for r in outcome.rows} == {16, 32}
    assert any("big32 (32 px): images resized from 16x16 to 32x32" in w
               for w in outcome.summary["warnings"])
    assert (tmp_path / "cross" / "figures" / "cross-domain-img0.png").is_file()
    layers_of_big = {r["layer"] for r in outcome.rows if r["generator"] == "big32"}
    assert len(layers_of_big) == 1 + 8  # single code + every composable layer


def test_study_with_per_layer_attribution(tmp_path, checkpoint, face_pngs):
    spec = spec_for(checkpoint, tasks=["inversion"], segmenter="scenes-segmenter64",
                    attribution_figures=1)
    run_study(spec, [face_pngs], tmp_path / "study", progress=False, log=lambda _: None)
    out = tmp_path / "study"
    with (out / "attribution.csv").open() as handle:
        table = list(csv.DictReader(handle))
    assert {r["layer"] for r in table} == {"layer2", "layer4"}  # not the single-code cell
    for layer in ("layer2", "layer4"):
        shares = sum(float(r["share"]) for r in table if r["layer"] == layer)
        assert shares == pytest.approx(1.0)
    assert (out / "figures" / "attribution-tiny-inversion.png").is_file()


# -- command line ------------------------------------------------------------------------------
def test_layers_command_dry_run_and_bad_input(capsys, tmp_path, checkpoint, face_pngs):
    base = ["layers", "--checkpoint", checkpoint, "--images", str(face_pngs), "--iterations",
            "3", "--codes", "2", "--perceptual", "none", "--quiet"]
    assert main([*base, "--out", str(tmp_path / "s"), "--dry-run"]) == 0
    err = capsys.readouterr().err
    assert "study: 21 cells x 3 images (189 image-iterations)" in err and "todo" in err
    assert main([*base, "--out", str(tmp_path / "s"), "--max-cost", "10"]) == 2
    assert "above --max-cost 10" in capsys.readouterr().err
    assert main([*base, "--out", str(tmp_path / "s"), "--tasks", "inversion,deblur"]) == 2
    assert "unknown task 'deblur'" in capsys.readouterr().err
    assert main([*base, "--out", str(tmp_path / "s"), "--layers", "layer9"]) == 2
    assert "not a composable layer" in capsys.readouterr().err
    assert not (tmp_path / "s").exists()
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "mine.txt").write_text("x")
    assert main([*base, "--out", str(tmp_path / "busy")]) == 2
    assert "holds no study" in capsys.readouterr().err
    defaults = ["layers", "--generator", "bedroom-pggan64", "--count", "1", "--out",
                str(tmp_path / "busy")]
    assert main(defaults) == 2  # refused before any default image is written
    assert "holds no study" in capsys.readouterr().err
    assert sorted(p.name for p in (tmp_path / "busy").iterdir()) == ["mine.txt"]


def test_cross_domain_command_end_to_end(capsys, tmp_path, checkpoint):
    other = str(save_generator(make_tiny_pggan(seed=4), tmp_path / "other.safetensors"))
    out = tmp_path / "cross"
    assert main(["cross-domain", "--generators", f"{checkpoint},{other}", "--count", "2",
                 "--layers", "-1", "--codes", "2", "--iterations", "2", "--perceptual", "none",
                 "--out", str(out), "--quiet"]) == 0
    printed = capsys.readouterr()
    assert "2 default images" in printed.err and "held-out bedroom renders" in printed.err
    assert "4/4 cells done" in printed.out
    assert sorted(p.name for p in (out / "inputs").iterdir())[0].startswith("bedroom-")


@pytest.mark.slow
def test_real_dcgan_reconstructs_better_from_shallow_to_deep_layers(tmp_path):
    """Plain inversion of out-of-domain images (rendered bedrooms through the DigiFace face
    prior), 20 codes, 60 iterations of the adam recipe as docs/studies.md measured it (no alpha
    warm-up, torch's beta2): PSNR rises from the single code through main.2 (4x4), main.5 (8x8)
    and main.8 (16x16). The deepest layer, main.11 (32x32, one transposed conv from the pixels),
    falls back below main.8; docs/studies.md shows why, and that today's defaults flatten the
    rise (every layer 8-10 dB higher at 60 iterations, main.5 above main.8)."""
    from inversion.images import save_png
    from mganprior.scenes.datasets import HELD_OUT_SEED
    from mganprior.scenes.render import render

    folder = tmp_path / "bedrooms"
    folder.mkdir()
    for seed in (HELD_OUT_SEED, HELD_OUT_SEED + 1):
        save_png(render("bedroom", seed)[0], folder / f"bedroom-{seed}.png")
    spec = StudySpec(kind="layers", generators=["digiface-dcgan64"], tasks=["inversion"],
                     layers="all", codes=[20], iterations=60, perceptual="none",
                     alpha_warmup=0.0, adam_beta2=0.999)
    outcome = run_study(spec, [folder], tmp_path / "study", progress=False, log=lambda _: None)
    psnr = {row["layer"]: row["mean"] for row in outcome.aggregates if row["metric"] == "psnr"}
    curve = [psnr[name] for name in (SINGLE_CODE, "main.2", "main.5", "main.8")]
    assert curve == sorted(curve), psnr
    assert curve[-1] - curve[0] > 5, psnr
    assert psnr["main.11"] < psnr["main.8"], psnr


def test_tuning_is_a_study_axis(tmp_path, checkpoint, face_pngs):
    spec = spec_for(checkpoint, tasks=["inversion"], layers="4", tune=[0, 3],
                    tuning={"tune_rank": 2, "tune_part": "all"})
    outcome = run_study(spec, [face_pngs], tmp_path / "study", progress=False,
                        log=lambda _: None, max_cost=10_000)
    labels = [cell.label for cell in outcome.cells]
    assert labels == [SINGLE_CODE, f"{SINGLE_CODE} +tune 3", "layer4", "layer4 +tune 3"]
    tuned = [c for c in outcome.cells if c.tune]
    for cell in tuned:
        config = json.loads((tmp_path / "study" / "cells" / cell.key / "config.json")
                            .read_text())
        assert config["tune"]["steps"] == 3 and config["tune"]["rank"] == 2
    plain = [c for c in outcome.cells if not c.tune]
    assert all("tune" not in json.loads((tmp_path / "study" / "cells" / c.key / "config.json")
                                        .read_text()) for c in plain)
    assert {(row["layer"], row["tune"]) for row in outcome.aggregates} == {
        (label, 3 if "tune" in label else 0) for label in labels}
    with pytest.raises(InputError, match="tune_rank must be a whole number >= 0"):
        spec_for(checkpoint, tuning={"tune_rank": -1}).validate()
    with pytest.raises(InputError, match="tuning settings name bogus; known: tune, tune_part"):
        spec_for(checkpoint, tuning={"bogus": 1}).validate()


def test_an_untuned_study_records_no_tuning_whatever_tuning_flags_say(tmp_path, checkpoint,
                                                                     face_pngs):
    """A study made before tuning existed resumes under the command line that now always passes
    every tuning setting."""
    plain = spec_for(checkpoint, tasks=["inversion"], layers="4")
    run_study(plain, [face_pngs], tmp_path / "study", progress=False, log=lambda _: None)
    record = json.loads((tmp_path / "study" / "study.json").read_text())
    assert "tune" not in record and "tuning" not in record
    flagged = spec_for(checkpoint, tasks=["inversion"], layers="4",
                       tuning={"tune_rank": 16, "tune_part": "tail", "tune_lr": 0.01})
    outcome = run_study(flagged, [face_pngs], tmp_path / "study", progress=False,
                        log=lambda _: None)
    assert outcome.ran == []
