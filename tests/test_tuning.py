"""Generator tuning after the inversion: it lowers the loss, the locality term bounds what it
does to random samples, batched equals looped, the stored change reproduces the tuned image
exactly, a killed run resumes, and what cannot be tuned is refused in one line."""

import dataclasses
import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

import inversion.engine as engine
import inversion.memory as memory
from analysis.attribution import attribute
from analysis.directions import Direction
from analysis.editing import EditSettings, check_zero_frame, edit
from helpers import ToyGenerator, make_tiny_pggan, rendered_targets, write_png
from inversion.composition import render
from inversion.engine import QUIET, invert
from inversion.images import load_images
from inversion.options import TuneSettings
from inversion.recipes import get_recipe
from inversion.rundir import RunDirectory
from inversion.runs import RunSettings, run_inversion
from inversion.tasks import Inversion
from inversion.tuning import tuning_stages
from mganprior.core.errors import InputError
from segmentation.vocabularies import Vocabulary

# torch's beta2: the recipe's 0.95 amplifies the rounding differences between a batch and one
# image in the inversion beyond what the batched tuning test below allows
RECIPE = get_recipe("adam", "inversion").with_overrides(iterations=30, codes=3, layer=4,
                                                        adam_beta2=0.999)


def unreachable_targets(n: int = 2):
    """Images of another generator: the tiny PGGAN cannot paint them exactly."""
    return rendered_targets(make_tiny_pggan(seed=7), n, seed=3)


def tuned(generator, targets, seeds=(0, 1), **settings):
    tune = TuneSettings(**({"tune": 40, "tune_lr": 0.01} | settings))
    return invert(generator, targets, Inversion(), RECIPE, seeds=list(seeds), options=QUIET,
                  references=targets,
                  tune=tune)


@pytest.mark.parametrize("part", ["tail", "head", "all", "progressive"])
@pytest.mark.parametrize("rank", [0, 2])
def test_tuning_lowers_the_loss_of_every_image(tiny_pggan, part, rank):
    result = tuned(tiny_pggan, unreachable_targets(), tune_part=part, tune_rank=rank,
                   tune_locality=0.0)
    for i, fact in enumerate(result.tuning):
        assert float(result.losses[i]) < 0.9 * fact["loss_untuned"], (part, rank, fact)
        assert result.metrics[i]["psnr"] > fact["psnr_untuned"]


def test_tuning_leaves_the_generator_as_it_was(tiny_pggan):
    before = {name: p.detach().clone() for name, p in tiny_pggan.named_parameters()}
    flags = {name: p.requires_grad for name, p in tiny_pggan.named_parameters()}
    tuned(tiny_pggan, unreachable_targets(1), seeds=(0,), tune=3, tune_part="all")
    for name, param in tiny_pggan.named_parameters():
        assert torch.equal(param, before[name]) and param.grad is None, name
        assert param.requires_grad == flags[name]


def test_the_locality_term_bounds_the_change_of_random_samples(tiny_pggan):
    targets = unreachable_targets()
    free = tuned(tiny_pggan, targets, tune_part="all", tune_rank=0, tune_locality=0.0)
    held = tuned(tiny_pggan, targets, tune_part="all", tune_rank=0, tune_locality=10.0,
                 tune_locality_mix=1.0)
    for loose, tight in zip(free.tuning, held.tuning, strict=True):
        assert tight["sample_change"] < 0.5 * loose["sample_change"], (loose, tight)
        assert loose["sample_change"] > 1.0  # free tuning does move random samples


def test_batched_tuning_equals_tuning_each_image_alone(tiny_pggan):
    targets = unreachable_targets()
    # Adam divides by the root of tiny second moments, so fp32 rounding of the batched
    # convolutions grows with the rate (about 1e-3 after 40 steps at 0.01); at 1e-3 it stays
    # below 1e-4
    settings = {"tune_part": "all", "tune_rank": 2, "tune_lr": 1e-3, "tune": 30}
    together = tuned(tiny_pggan, targets, seeds=(5, 6), **settings)
    for i, seed in enumerate((5, 6)):
        alone = tuned(tiny_pggan, targets[i:i + 1], seeds=(seed,), **settings)
        for key, value in alone.adapters[0].tensors.items():
            torch.testing.assert_close(together.adapters[i].tensors[key], value,
                                       atol=1e-4, rtol=0, msg=key)
        torch.testing.assert_close(together.reconstructions[i:i + 1], alone.reconstructions,
                                   atol=1e-5, rtol=0)


def test_progressive_stages_go_shallow_to_deep_and_cover_the_generator(tiny_pggan):
    layer = tiny_pggan.layer(4)
    stages = tuning_stages(tiny_pggan, layer, "progressive")
    assert len(stages) > 2
    everything = [name for name, _ in tiny_pggan.named_parameters()]
    assert sorted(n for stage in stages for n in stage) == sorted(everything)
    assert stages[0] == tuning_stages(tiny_pggan, tiny_pggan.layer(1), "head")[0]
    tail = set(tuning_stages(tiny_pggan, layer, "tail")[0])
    head = set(tuning_stages(tiny_pggan, layer, "head")[0])
    assert tail and head and not tail & head
    with pytest.raises(InputError, match="tune_part head: no weight of this pggan generator"):
        tuning_stages(tiny_pggan, tiny_pggan.layer(0), "head")  # a single code has no head


def test_a_later_stage_has_not_moved_before_its_turn(tiny_pggan):
    """With fewer steps than stages reach, the deepest stage keeps its starting (zero) change."""
    result = tuned(tiny_pggan, unreachable_targets(1), seeds=(0,), tune=2,
                   tune_part="progressive", tune_rank=0)
    deepest = tuning_stages(tiny_pggan, tiny_pggan.layer(4), "progressive")[-1]
    first = tuning_stages(tiny_pggan, tiny_pggan.layer(4), "progressive")[0]
    tensors = result.adapters[0].tensors
    assert all(float(tensors[f"{n}.delta"].abs().max()) == 0 for n in deepest)
    assert any(float(tensors[f"{n}.delta"].abs().max()) > 0 for n in first)


def settings_for(generator, **tune):
    recipe = get_recipe("adam", "inversion").with_overrides(iterations=10, codes=3, layer=4)
    return RunSettings(generator, {"name": "tiny", "sha256": "0" * 64}, Inversion(), recipe,
                       batch_size=2, progress=False,
                       tune=TuneSettings(**({"tune": 5, "tune_rank": 2} | tune)))


def test_the_run_directory_stores_the_change_and_reproduces_the_tuned_image(
        tmp_path, tiny_pggan, face_pngs):
    images = load_images([face_pngs], 16)
    run, summary = run_inversion(settings_for(tiny_pggan), images, tmp_path / "run")
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["tune"] == TuneSettings(tune=5, tune_rank=2).to_dict()
    loaded = run.load_result(generator=tiny_pggan)
    for i, name in enumerate(loaded.names):
        folder = run.image_dir(name)
        record = json.loads((folder / "record.json").read_text())
        stored = load_file(str(folder / "tuning.safetensors"))
        assert record["tuning"]["bytes"] == sum(t.numel() * 4 for t in stored.values())
        assert {"psnr_untuned", "sample_change", "loss_untuned"} <= set(record["tuning"])
        assert (folder / "untuned.png").is_file()
        with torch.no_grad():
            again = render(loaded.adapters[i].apply(tiny_pggan), loaded.codes[i:i + 1],
                           loaded.alphas[i:i + 1], loaded.layer, loaded.fusion).clamp(-1, 1)
        # the PNG holds the tuned image: re-rendering it from the stored change gives its pixels
        torch.testing.assert_close(((again[0] + 1) * 127.5).round(),
                                   ((loaded.reconstructions[i] + 1) * 127.5).round(),
                                   atol=1, rtol=0)
    assert summary["ok"] == 3


def test_a_killed_tuning_run_resumes_with_the_same_results(tmp_path, tiny_pggan, face_pngs,
                                                           monkeypatch):
    images = load_images([face_pngs], 16)
    run_inversion(settings_for(tiny_pggan), images, tmp_path / "whole")
    calls = []
    real = engine.tune_generator

    def killed_in_the_second_batch(*args, **kwargs):
        calls.append(args[9].tune)  # the memory plan's one-step probes do not count
        if calls.count(5) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(engine, "tune_generator", killed_in_the_second_batch)
    with pytest.raises(KeyboardInterrupt):
        run_inversion(settings_for(tiny_pggan), images, tmp_path / "split")
    assert RunDirectory(tmp_path / "split").finished() == {"img0", "img1"}
    monkeypatch.setattr(engine, "tune_generator", real)
    run_inversion(settings_for(tiny_pggan), images, tmp_path / "split")
    split = RunDirectory(tmp_path / "split").load_result(generator=tiny_pggan)
    whole = RunDirectory(tmp_path / "whole").load_result(generator=tiny_pggan)
    assert split.names == whole.names
    for a, b in zip(split.adapters, whole.adapters, strict=True):
        for key, value in a.tensors.items():
            torch.testing.assert_close(value, b.tensors[key], atol=1e-5, rtol=1e-4)


def test_other_tuning_settings_on_the_same_run_are_refused(tmp_path, tiny_pggan, face_pngs):
    images = load_images([face_pngs], 16)
    run_inversion(settings_for(tiny_pggan), images, tmp_path / "run")
    with pytest.raises(InputError, match=r'other settings \(tune: \{.*"rank": 2.* vs .*"rank": 4'):
        run_inversion(settings_for(tiny_pggan, tune_rank=4), images, tmp_path / "run")


class ValueBranching(ToyGenerator):
    """A generator whose tail branches on its values: it runs, but not per image under vmap."""

    family = "value-branching"

    def tail(self, cut, layer):
        images = super().tail(cut, layer)
        return images if bool(images.sum() > -1e9) else -images


def test_a_generator_that_cannot_be_tuned_per_image_is_refused_before_anything_is_written(
        tmp_path):
    generator = ValueBranching()
    recipe = get_recipe("adam", "inversion").with_overrides(iterations=2, codes=2,
                                                            layer="feat")
    settings = RunSettings(generator, {"name": "toy"}, Inversion(), recipe, progress=False,
                           tune=TuneSettings(tune=2))
    images = load_images([write_png(tmp_path / "toy.png", np.full((2, 2, 3), 128, np.uint8))], 2)
    with pytest.raises(InputError, match=r"^tune: .*cannot run per image under torch.func.vmap"):
        run_inversion(settings, images, tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_a_tuning_that_does_not_fit_is_refused_in_one_line(tmp_path, tiny_pggan, face_pngs,
                                                           monkeypatch):
    images = load_images([face_pngs], 16)
    monkeypatch.setattr(memory, "available_bytes", lambda device: 4096)
    with pytest.raises(InputError, match=r"^tune: tuning one image needs about") as caught:
        run_inversion(settings_for(tiny_pggan, tune_rank=0, tune_part="all"), images,
                      tmp_path / "run")
    assert "\n" not in str(caught.value)
    assert not (tmp_path / "run").exists()


def test_a_stored_change_is_checked_against_the_generator_before_it_is_loaded(
        tmp_path, tiny_pggan, face_pngs):
    images = load_images([face_pngs], 16)[:1]
    run, _ = run_inversion(settings_for(tiny_pggan), images, tmp_path / "run")
    path = run.image_file("img0", "tuning")
    good = load_file(str(path))
    key = next(k for k in good if k.endswith(".a"))
    meta = {"rank": "2", "part": "tail"}

    def stored(tensors, metadata=meta):
        save_file(tensors, str(path), metadata=metadata)
        return lambda: run.load_result(generator=tiny_pggan)

    cases = [
        ({**good, key: torch.zeros(3, 3)}, meta, r"expected \["),
        ({**good, "nowhere.a": torch.zeros(2, 1)}, meta, "not a rank-2 adapter"),
        ({k: v for k, v in good.items() if k != key}, meta, "is missing"),
        ({**good, key: torch.full_like(good[key], float("nan"))}, meta, "non-finite"),
        ({**good, key: good[key].int()}, meta, "not floating point"),
        (good, {"rank": "4", "part": "tail"}, "but the run tunes tail at rank 2"),
    ]
    for tensors, metadata, message in cases:
        with pytest.raises(InputError, match=message):
            stored(tensors, metadata)()
    save_file(good, str(path), metadata={"rank": "2"})  # no part: the folder is not finished
    problems = []
    assert run.folder_records(problems) == [] and "lacks its rank and part" in problems[0]
    save_file(good, str(path), metadata=meta)
    assert run.load_result(generator=tiny_pggan).adapters[0].names


@pytest.mark.parametrize(("field", "value"), [("tune", -1), ("tune_part", "middle"),
                                              ("tune_rank", -2), ("tune_lr", 0.0),
                                              ("tune_locality", float("nan")),
                                              ("tune_locality_mix", 1.5)])
def test_bad_tuning_settings_name_their_field(field, value):
    with pytest.raises(InputError, match=f"^{field} ") as caught:
        TuneSettings(**{field: value})
    assert caught.value.field == field


def test_attribution_and_edits_use_each_images_tuned_generator(tmp_path, tiny_pggan, face_pngs):
    images = load_images([face_pngs], 16)
    run, _ = run_inversion(settings_for(tiny_pggan, tune=30, tune_rank=0, tune_part="all",
                                        tune_lr=0.01, tune_locality=0.0),
                           images[:2], tmp_path / "run")
    loaded = run.load_result(generator=tiny_pggan)
    moved = (loaded.untuned - loaded.reconstructions).abs().flatten(1).mean(dim=1) * 127.5
    assert float(moved.min()) > 3  # tuning changed every image beyond 8-bit rounding
    labels = torch.zeros(2, 16, 16, dtype=torch.long)
    labels[:, :, 8:] = 1
    vocabulary = Vocabulary("halves", ("left", "right"), ((255, 0, 0), (0, 0, 255)))
    result = attribute(tiny_pggan, loaded, labels=labels, vocabulary=vocabulary, progress=False)
    assert float(result.reproduction_error.max()) < 1.0
    untuned = attribute(tiny_pggan, dataclasses.replace(loaded, adapters=None), labels=labels,
                        vocabulary=vocabulary, progress=False)
    assert float(untuned.reproduction_error.min()) > 3  # the plain generator would not do
    direction = Direction("d", np.eye(8)[2], "z", "file")
    edited = edit(tiny_pggan, loaded, direction, EditSettings(steps=3), progress=False)
    assert check_zero_frame(edited, loaded.reconstructions) < 1.0


def test_a_tuned_run_from_the_command_line_to_the_report(tmp_path, tiny_pggan, face_pngs):
    """invert --tune, attribute, edit and report on one tiny run, the report opened in a real
    headless Chromium: the tuned generator of each image reproduces its reconstruction (else
    attribute and edit refuse), and the report shows untuned beside tuned."""
    from inversion.generators import save_generator
    from mganprior.cli import main
    from reports.browser import chromium_path, open_page

    checkpoint = str(save_generator(tiny_pggan, tmp_path / "tiny.safetensors"))
    run = tmp_path / "run"
    assert main(["invert", "--checkpoint", checkpoint, "--images", str(face_pngs), "--out",
                 str(run), "--iterations", "5", "--codes", "3", "--layer", "4", "--tune", "20",
                 "--tune-part", "all", "--tune-rank", "0", "--tune-lr", "0.01",
                 "--tune-locality", "0", "--perceptual", "none", "--quiet"]) == 0
    labels = tmp_path / "labels"
    labels.mkdir()
    for name in RunDirectory(run).finished():
        write_png(labels / f"{name}.png", np.tile(np.arange(16, dtype=np.uint8) // 8, (16, 1)))
    assert main(["attribute", str(run), "--labels", str(labels), "--quiet"]) == 0
    assert main(["directions", "sefa", "--checkpoint", checkpoint, "--count", "1", "--out",
                 str(tmp_path / "dirs")]) == 0
    assert main(["edit", str(run), "--direction", str(tmp_path / "dirs" / "sefa_00.npy"),
                 "--steps", "3", "--quiet"]) == 0
    out = tmp_path / "report.html"
    assert main(["report", str(run), "--out", str(out)]) == 0
    html = out.read_text()
    assert "Generator tuning" in html and "<th>untuned</th>" in html
    assert "generator tuning</th><td>steps=20, part=all, rank=0" in html
    if chromium_path() is None:
        pytest.skip("no chromium binary")
    with open_page(out) as (page, log):
        assert page.evaluate("Array.from(document.images).every("
                             "i => i.complete && i.naturalWidth > 0)")
        assert "Generator tuning" in page.locator("h3").all_inner_texts()
    assert log.errors == [] and log.blocked == []
