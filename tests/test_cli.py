"""The command line: thin over the library, one clear line for every kind of bad input."""

import json
import re
import subprocess
import sys

import numpy as np
import pytest
import torch

from helpers import write_png
from inversion.generators import save_generator
from mganprior.cli import main


@pytest.fixture
def checkpoint(tmp_path, tiny_pggan):
    return str(save_generator(tiny_pggan, tmp_path / "tiny.safetensors"))


def invert_args(checkpoint, images, out, *extra):
    return ["invert", "--checkpoint", checkpoint, "--images", str(images), "--out", str(out),
            "--iterations", "5", "--codes", "2", "--quiet", *extra]


def error_line(capsys):
    err = capsys.readouterr().err.strip().splitlines()
    assert err and err[-1].startswith("mganprior: error: ")
    return err[-1]


def test_zoo_lists_named_generators(capsys):
    assert main(["zoo"]) == 0
    assert "digiface-dcgan64" in capsys.readouterr().out


def test_zoo_prints_layers_as_index_name_shape(capsys):
    assert main(["zoo", "digiface-dcgan64"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "dcgan, 64 px, latent spaces z", "0 z 100x1x1", "1 main.2 512x4x4", "2 main.5 256x8x8",
        "3 main.8 128x16x16", "4 main.11 64x32x32"]


def test_zoo_on_a_checkpoint_file(capsys, checkpoint):
    assert main(["zoo", "--checkpoint", checkpoint]) == 0
    assert capsys.readouterr().out.splitlines()[5] == "4 layer4 12x8x8"


def test_invert_writes_a_run_and_says_where(capsys, tmp_path, checkpoint, face_pngs):
    out = tmp_path / "run"
    assert main(invert_args(checkpoint, face_pngs, out, "--layer", "-1")) == 0
    printed = capsys.readouterr().out
    assert f"run directory: {out}" in printed and "3/3 images inverted, PSNR" in printed
    config = json.loads((out / "config.json").read_text())
    assert config["layer"]["name"] == "layer6" and config["generator"]["sha256"]
    assert len((out / "results.jsonl").read_text().splitlines()) == 3


def test_single_code_baseline_flags(tmp_path, checkpoint, face_pngs):
    out = tmp_path / "single"
    assert main(invert_args(checkpoint, face_pngs, out, "--codes", "1", "--layer", "0")) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["codes"] == 1 and config["layer"]["name"] == "z"


@pytest.mark.parametrize(("extra", "message"), [
    (["--layer", "12"], "layer 12 is not a composable layer of this pggan generator; valid "
                        "layers (index name CxHxW): 0 z 8x1x1, 1 layer1 16x4x4"),
    (["--codes", "0"], "--codes must be at least 1, got 0"),
    (["--task", "inpainting", "--mask", "center:2"], "--mask center:2: the fraction must be"),
    (["--task", "super-resolution", "--factor", "3"], "--factor 3 does not divide"),
    (["--batch-size", "0"], "--batch-size must be at least 1"),
    (["--device", "cuda:7"], "--device"),
    (["--carry", "img=alpha"], "--carry names img, but the pggan cut at layer"),
    (["--perceptual-size", "0"], "--perceptual-size must be between 16 and 1024 pixels"),
    (["--lr", "inf"], "--lr must be a finite number above 0"),
    (["--perceptual-lambda", "nan"], "--perceptual-lambda must be a finite number >= 0"),
])
def test_bad_flags_fail_with_one_line_and_write_nothing(capsys, tmp_path, checkpoint, face_pngs,
                                                        extra, message):
    out = tmp_path / "run"
    assert main(invert_args(checkpoint, face_pngs, out, *extra)) == 2
    assert message in error_line(capsys)
    assert not out.exists()


def test_unknown_generator_lists_the_valid_ones(capsys, tmp_path, face_pngs):
    code = main(["invert", "--generator", "stylegan9", "--images", str(face_pngs), "--out",
                 str(tmp_path / "x")])
    assert code == 2
    assert "unknown generator 'stylegan9'; named generators: digiface-dcgan64" in \
        error_line(capsys)


def test_unknown_task_is_refused_by_the_parser(capsys, checkpoint, tmp_path, face_pngs):
    with pytest.raises(SystemExit) as exit_info:
        main(invert_args(checkpoint, face_pngs, tmp_path / "x", "--task", "deblur"))
    assert exit_info.value.code == 2
    assert "invalid choice: 'deblur'" in capsys.readouterr().err


def test_mismatched_checkpoint_is_named(capsys, tmp_path, face_pngs, checkpoint):
    (tmp_path / "tiny.json").write_text('{"family": "pggan", "resolution": 32, "z_dim": 8, '
                                        '"channels": [16, 12, 8, 8]}')
    assert main(invert_args(checkpoint, face_pngs, tmp_path / "run")) == 2
    line = error_line(capsys)
    assert "tiny.safetensors does not match the architecture: missing keys: layer7" in line
    assert not (tmp_path / "run").exists()


def test_bad_images_stop_the_run_before_anything_is_written(capsys, tmp_path, checkpoint,
                                                            face_pngs):
    (face_pngs / "zz_broken.png").write_bytes(b"not a png")
    assert main(invert_args(checkpoint, face_pngs, tmp_path / "run")) == 2
    assert "zz_broken.png is corrupt or not an image" in error_line(capsys)
    assert not (tmp_path / "run").exists()
    assert main(invert_args(checkpoint, tmp_path / "missing.png", tmp_path / "run")) == 2
    assert "missing.png does not exist" in error_line(capsys)


def test_conversions_are_noted_on_stderr(capsys, tmp_path, checkpoint):
    write_png(tmp_path / "gray.png", np.full((32, 32), 90, np.uint8))
    assert main(invert_args(checkpoint, tmp_path / "gray.png", tmp_path / "run")) == 0
    err = capsys.readouterr().err
    assert "gray.png: grayscale image converted to RGB" in err
    assert "gray.png: resized from 32x32 to 16x16" in err


def test_mask_of_the_wrong_size(capsys, tmp_path, checkpoint, face_pngs):
    mask = write_png(tmp_path / "mask.png", np.full((64, 64), 255, np.uint8))
    args = invert_args(checkpoint, face_pngs, tmp_path / "run", "--task", "inpainting",
                       "--mask", str(mask))
    assert main(args) == 2
    assert "mask.png is 64x64 but the generator makes 16x16 images" in error_line(capsys)
    assert not (tmp_path / "run").exists()
    assert main([*args, "--resize-mask"]) == 0


def test_module_and_console_script_entry_points():
    for command in ([sys.executable, "-m", "mganprior", "--help"],
                    [str(__import__("pathlib").Path(sys.executable).parent / "mganprior"),
                     "invert", "--help"]):
        done = subprocess.run(command, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        assert "usage: mganprior" in done.stdout


def test_zoo_lists_the_scene_models(capsys):
    assert main(["zoo"]) == 0
    out = capsys.readouterr().out
    for name in ("bedroom-pggan64", "conference-pggan64", "church-pggan64",
                 "scenes-segmenter64"):
        assert name in out


def test_scenes_command_writes_images_and_label_maps(capsys, tmp_path):
    assert main(["scenes", "--domain", "bedroom", "--count", "2", "--size", "16", "--out",
                 str(tmp_path)]) == 0
    assert sorted(p.name for p in tmp_path.glob("*.png")) == ["bedroom-000000.png",
                                                              "bedroom-000001.png"]
    from PIL import Image

    labels = np.asarray(Image.open(tmp_path / "labels" / "bedroom-000000.png"))
    assert labels.shape == (16, 16) and labels.max() < 21


@pytest.mark.parametrize("command", [
    ["scenes", "--domain", "kitchen", "--out", "{tmp}/s"],
    ["train-generator", "--domain", "kitchen", "--out", "{tmp}/g"],
    ["train-segmenter", "--domains", "bedroom,kitchen", "--out", "{tmp}/s",
     "--images-per-domain", "2", "--validation-per-domain", "2"],
])
def test_unknown_domain_lists_the_domains(capsys, tmp_path, command):
    assert main([part.format(tmp=tmp_path) for part in command]) == 2
    assert "unknown scene domain 'kitchen'; domains: bedroom, conference_room, " \
        "church_outdoor" in error_line(capsys)
    assert not any(tmp_path.iterdir())


def test_train_generator_runs_resumes_and_refuses_other_settings(capsys, tmp_path):
    args = ["train-generator", "--domain", "church_outdoor", "--out", str(tmp_path / "g"),
            "--resolution", "8", "--channels", "8,8", "--z-dim", "4", "--images", "8",
            "--batch", "4", "--iterations", "2", "--device", "cpu", "--quiet"]
    assert main(args) == 0
    assert "trained 2 steps" in capsys.readouterr().out
    assert main([*args[:-4], "4", "--device", "cpu", "--quiet"]) == 0  # continues to 4
    assert "trained 4 steps" in capsys.readouterr().out
    assert main([*args, "--lr", "0.1"]) == 2
    assert "other settings (lr: 0.002 vs 0.1)" in error_line(capsys)
    assert main([*args, "--channels", "8,x"]) == 2
    assert "--channels must be comma-separated integers" in error_line(capsys)


@pytest.mark.parametrize("signum", ["SIGTERM", "SIGINT"])
def test_training_stopped_by_a_signal_checkpoints_and_says_how_to_resume(tmp_path, signum):
    import signal
    import time

    from mganprior.training.gan import CHECKPOINT, CHECKPOINT_KEYS
    from mganprior.training.loop import load_state

    out = tmp_path / "g"
    command = [sys.executable, "-m", "mganprior", "train-generator", "--domain", "bedroom",
               "--out", str(out), "--resolution", "8", "--channels", "8,8", "--z-dim", "4",
               "--images", "8", "--batch", "4", "--iterations", "1000000",
               "--checkpoint-every", "5", "--device", "cpu", "--quiet"]
    # start_new_session: like a background job, and the signal reaches only this process
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)
    deadline = time.monotonic() + 60
    while not (out / CHECKPOINT).exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    process.send_signal(getattr(signal, signum))
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130, err
    assert "interrupted; rerun the same command to resume" in err
    state = load_state(out / CHECKPOINT, CHECKPOINT_KEYS)  # the trainer's own reader
    assert state["step"] >= 5  # the run resumes from here (test_training checks the step)


def test_index_rebuilds_a_run_from_its_image_folders(capsys, tmp_path, checkpoint, face_pngs):
    out = tmp_path / "run"
    assert main(invert_args(checkpoint, face_pngs, out)) == 0
    (out / "results.jsonl").unlink()
    (out / "summary.json").unlink()
    capsys.readouterr()
    assert main(["index", str(out)]) == 0
    assert "3/3 images inverted" in capsys.readouterr().out
    assert len((out / "results.jsonl").read_text().splitlines()) == 3
    assert json.loads((out / "summary.json").read_text())["ok"] == 3
    assert main(["index", str(tmp_path)]) == 2
    assert "is neither a run" in error_line(capsys)


def test_the_wait_policy_yields_to_any_policy_the_user_set():
    from mganprior.entry import WAIT_POLICY, apply_wait_policy

    for before, after in [({}, WAIT_POLICY), ({"GOMP_SPINCOUNT": "0"}, {"GOMP_SPINCOUNT": "0"}),
                          ({"OMP_WAIT_POLICY": "PASSIVE"}, {"OMP_WAIT_POLICY": "PASSIVE"})]:
        environ = dict(before)
        apply_wait_policy(environ)
        assert environ == after


@pytest.mark.parametrize(("command", "owner", "module"), [
    ("invert", "Recipe", "inversion.recipes"),
    ("attribute", "AttributionSettings", "analysis.attribution"),
    ("edit", "EditSettings", "analysis.editing"),
])
def test_every_settings_field_is_a_flag_with_the_fields_help(command, owner, module):
    import dataclasses
    import importlib

    from mganprior.cli import build_parser, flag_for

    cls = getattr(importlib.import_module(module), owner)
    sub = build_parser(command)._subparsers._group_actions[0].choices[command]
    actions = {option: action for action in sub._actions for option in action.option_strings}
    names = {item.name for item in dataclasses.fields(cls)}
    for item in dataclasses.fields(cls):
        if item.name == "name":  # the recipe's own name is --recipe
            continue
        action = actions[flag_for(item.name)]
        # the help is the field's, with the other settings it names written as their flags
        expected = re.sub(r"\b[a-z]+(?:_[a-z]+)+\b", lambda m: flag_for(m.group(0))
                          if m.group(0) in names else m.group(0), item.metadata["help"])
        assert action.help.startswith(expected), item.name
        assert action.choices == item.metadata["choices"] or action.choices is None


def test_recipe_flags_reach_the_run(tmp_path, checkpoint, face_pngs):
    out = tmp_path / "run"
    assert main(["invert", "--checkpoint", str(checkpoint), "--images", str(face_pngs),
                 "--out", str(out), "--iterations", "2", "--codes", "2", "--lr-rampup", "0.5",
                 "--mse-weight", "2", "--quiet"]) == 0
    recipe = json.loads((out / "config.json").read_text())["recipe"]
    assert (recipe["lr_rampup"], recipe["mse_weight"], recipe["codes"]) == (0.5, 2.0, 2)


def test_a_log_file_gets_one_line_per_image_and_no_bars(capsys, tmp_path, checkpoint, face_pngs):
    assert main(["invert", "--checkpoint", str(checkpoint), "--images", str(face_pngs),
                 "--out", str(tmp_path / "run"), "--iterations", "3", "--codes", "2"]) == 0
    err = capsys.readouterr().err  # not a terminal: no progress bar, no carriage returns
    assert "\r" not in err and "\x1b[" not in err and "it/s" not in err
    lines = [line for line in err.splitlines() if line.startswith("inverted ")]
    assert len(lines) == len(list(face_pngs.glob("*.png")))
    assert all(" psnr " in line and line.endswith(" s") for line in lines)


def test_compiled_inversion_gives_the_eager_answer(tmp_path, checkpoint, face_pngs):
    """--compile runs the head and tail through torch.compile: the same codes as eager, up to
    fp32 rounding, and the run records it."""
    from torch._dynamo.utils import counters

    from inversion.rundir import RunDirectory

    results = {}
    for flags in ((), ("--compile",)):
        out = tmp_path / ("compiled" if flags else "eager")
        frames = counters["stats"]["unique_graphs"]
        assert main(invert_args(checkpoint, face_pngs, out, "--layer", "2", *flags)) == 0
        assert (counters["stats"]["unique_graphs"] > frames) == bool(flags)  # dynamo traced
        assert json.loads((out / "config.json").read_text())["compile"] == bool(flags)
        results[bool(flags)] = RunDirectory(out).load_result()
    torch.testing.assert_close(results[True].codes, results[False].codes, atol=1e-4, rtol=0)
    torch.testing.assert_close(results[True].alphas, results[False].alphas, atol=1e-4, rtol=0)
