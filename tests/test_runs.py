"""Run directories: contents, atomic writes, resume after interruption, settings checks, reload."""

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import inversion.runs as runs
from helpers import Poisoned, write_png
from inversion.images import load_images
from inversion.recipes import get_recipe
from inversion.rundir import RunDirectory
from inversion.runs import RunSettings, run_inversion
from inversion.tasks import Colorization, Inversion, SuperResolution
from mganprior.core.errors import InputError

INFO = {"name": "tiny", "sha256": "0" * 64}


def settings_for(generator, task=None, **overrides):
    recipe = get_recipe("adam", "inversion").with_overrides(
        **({"iterations": 20, "codes": 3, "layer": 4} | overrides))
    return RunSettings(generator, INFO, task or Inversion(), recipe, batch_size=2,
                       progress=False)


def test_a_run_directory_holds_everything_design_promises(tmp_path, tiny_pggan, face_pngs):
    images = load_images([face_pngs], 16)
    _, summary = run_inversion(settings_for(tiny_pggan), images, tmp_path / "run")
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["generator"] == INFO and config["codes"] == 3 and config["seed"] == 0
    assert config["layer"] == {"index": 4, "name": "layer4", "shape": [12, 8, 8]}
    assert config["task"] == {"name": "inversion"} and config["iterations"] == 20
    assert config["perceptual"]["backend"] == "none" and "torch" in config["versions"]
    lines = (tmp_path / "run" / "results.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert [r["image"] for r in records] == ["img0", "img1", "img2"]
    for record in records:
        assert {"image", "psnr", "ssim", "loss", "seconds"} <= set(record)
        assert record["status"] == "ok" and record["psnr"] > 10
        folder = tmp_path / "run" / "images" / record["image"]
        assert {p.name for p in folder.iterdir()} == {
            "target.png", "degraded.png", "reconstruction.png", "latents.safetensors",
            "record.json"}
        latents = load_file(str(folder / "latents.safetensors"))
        assert latents["codes"].shape == (3, 8) and latents["alphas"].shape == (3, 12)
    assert summary["images"] == 3 and summary["ok"] == 3
    assert summary["psnr_mean"] == pytest.approx(sum(r["psnr"] for r in records) / 3)
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["ok"] == 3
    assert not list((tmp_path / "run" / "images").glob(".partial-*"))


def test_rerunning_skips_finished_images_and_resumes_after_an_interruption(
        tmp_path, tiny_pggan, face_pngs, monkeypatch):
    images = load_images([face_pngs], 16)
    calls = []
    real_invert = runs.invert

    def interrupted_after_first_batch(*args, **kwargs):
        calls.append(kwargs["names"])
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_invert(*args, **kwargs)

    monkeypatch.setattr(runs, "invert", interrupted_after_first_batch)
    with pytest.raises(KeyboardInterrupt):
        run_inversion(settings_for(tiny_pggan), images, tmp_path / "run")
    run = RunDirectory(tmp_path / "run")
    assert run.finished() == {"img0", "img1"}  # the first batch of two survived

    calls.clear()
    monkeypatch.setattr(runs, "invert", lambda *a, **k: (calls.append(k["names"]),
                                                         real_invert(*a, **k))[1])
    run_inversion(settings_for(tiny_pggan), images, tmp_path / "run")
    assert calls == [["img2"]]
    assert [r["image"] for r in run.records()] == ["img0", "img1", "img2"]

    calls.clear()
    _, summary = run_inversion(settings_for(tiny_pggan), images, tmp_path / "run")
    assert calls == [] and summary["images"] == 3


def test_resumed_images_match_an_uninterrupted_run(tmp_path, tiny_pggan, face_pngs):
    images = load_images([face_pngs], 16)
    run_inversion(settings_for(tiny_pggan), images[:1], tmp_path / "split")
    run_inversion(settings_for(tiny_pggan), images, tmp_path / "split")
    run_inversion(settings_for(tiny_pggan), images, tmp_path / "whole")
    split = RunDirectory(tmp_path / "split").load_result()
    whole = RunDirectory(tmp_path / "whole").load_result()
    torch.testing.assert_close(split.codes, whole.codes, atol=1e-4, rtol=1e-4)


def test_other_settings_on_the_same_directory_are_refused(tmp_path, tiny_pggan, face_pngs):
    images = load_images([face_pngs], 16)
    run_inversion(settings_for(tiny_pggan), images, tmp_path / "run")
    before = (tmp_path / "run" / "results.jsonl").read_text()
    with pytest.raises(InputError, match=r"other settings.*codes: 3 vs 5"):
        run_inversion(settings_for(tiny_pggan, codes=5), images, tmp_path / "run")
    assert (tmp_path / "run" / "results.jsonl").read_text() == before
    (tmp_path / "stranger").mkdir()
    (tmp_path / "stranger" / "file.txt").write_text("x")
    with pytest.raises(InputError, match="not empty and holds no run"):
        run_inversion(settings_for(tiny_pggan), images, tmp_path / "stranger")


def test_results_reload_as_an_inversion_result(tmp_path, tiny_pggan, face_pngs):
    images = load_images([face_pngs], 16)
    run_inversion(settings_for(tiny_pggan), images, tmp_path / "run")
    result = RunDirectory(tmp_path / "run").load_result()
    assert result.names == ["img0", "img1", "img2"]
    assert result.codes.shape == (3, 3, 8) and result.alphas.shape == (3, 3, 12)
    assert result.layer.name == "layer4" and result.layer.shape == (12, 8, 8)
    assert result.reconstructions.shape == (3, 3, 16, 16)
    assert result.trace.shape[1] == 3 and result.trace_iterations[-1] == 19
    from inversion.composition import render

    with torch.no_grad():
        again = render(tiny_pggan, result.codes, result.alphas, result.layer, result.fusion)
    torch.testing.assert_close(again.clamp(-1, 1), result.reconstructions, atol=1 / 127.5,
                               rtol=0)


def test_colorization_keeps_its_output_beside_the_reconstruction(tmp_path, tiny_pggan, face_pngs):
    images = load_images([face_pngs], 16)
    run_inversion(settings_for(tiny_pggan, task=Colorization()), images, tmp_path / "run")
    assert (tmp_path / "run" / "images" / "img0" / "output.png").is_file()


def test_observed_low_resolution_images_with_and_without_references(tmp_path, tiny_pggan,
                                                                    face_pngs):
    task = SuperResolution(factor=2)
    lows = load_images([face_pngs], 8)
    settings = settings_for(tiny_pggan, task=task)
    settings.observed = True
    run_inversion(settings, lows, tmp_path / "plain")
    record = RunDirectory(tmp_path / "plain").records()[0]
    assert record["metric_reference"] == "observation" and record["psnr"] > 0
    assert not (tmp_path / "plain" / "images" / "img0" / "target.png").exists()
    references = {image.name: image for image in load_images([face_pngs], 16)}
    run_inversion(settings, lows, tmp_path / "ref", references=references)
    assert RunDirectory(tmp_path / "ref").records()[0]["metric_reference"] == "reference"
    with pytest.raises(InputError, match="no reference image for img1"):
        run_inversion(settings, lows, tmp_path / "missing", references={"img0": references["img0"]})


def test_failed_images_are_recorded_and_the_others_finish(tmp_path):

    for i in range(3):
        write_png(tmp_path / f"red{i}.png", np.full((2, 2, 3), (191, 128, 128), np.uint8))
    images = load_images([tmp_path], 2)
    settings = settings_for(Poisoned().eval(), layer="feat", iterations=300, codes=2)
    settings.batch_size = 3
    _, summary = run_inversion(settings, images, tmp_path / "run")
    records = RunDirectory(tmp_path / "run").records()
    assert [r["status"] for r in records] == ["ok", "failed", "ok"]
    assert "loss became nan" in records[1]["error"] and records[1]["psnr"] is None
    assert summary["failed"] == 1 and summary["ok"] == 2
