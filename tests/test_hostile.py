"""Hostile input and faults, as an attacker (or an unlucky user) would bring them: one line each,
nothing lost, nothing half-written. Table-driven where the attacks are alike.

The file uses the command line and the public API only, so the same attacks can be replayed
against any version of the project.
"""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from inversion.generators import save_generator
from mganprior.cli import main

REPO = Path(__file__).resolve().parents[1]


# -- shared set-up ---------------------------------------------------------------------------------
@pytest.fixture
def checkpoint(tmp_path, tiny_pggan):
    return str(save_generator(tiny_pggan, tmp_path / "tiny.safetensors"))


@pytest.fixture
def pngs(tmp_path, tiny_pggan):
    folder = tmp_path / "pngs"
    folder.mkdir()
    for i, image in enumerate(tiny_pggan.sample(2, seed=3)):
        pixels = ((image.clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()
        Image.fromarray(pixels).save(folder / f"img{i}.png")
    return folder


def invert_args(checkpoint, images, out, *extra):
    return ["invert", "--checkpoint", str(checkpoint), "--images", *map(str, images),
            "--out", str(out), "--iterations", "2", "--codes", "2", "--quiet", *extra]


@pytest.fixture
def run(tmp_path, checkpoint, pngs):
    out = tmp_path / "run"
    assert main(invert_args(checkpoint, [pngs], out)) == 0
    return out


def error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert err and err[-1].startswith("mganprior: error: "), err
    return err[-1]


def refuses(capsys, args, message) -> str:
    assert main(args) == 2
    line = error_line(capsys)
    assert message in line, line
    assert "Traceback" not in capsys.readouterr().err
    return line


# -- where outputs go ---------------------------------------------------------------------------
def test_report_out_through_a_symlink_writes_its_target(tmp_path, run):
    target, link = tmp_path / "real.html", tmp_path / "link.html"
    target.write_text("old")
    link.symlink_to(target)
    assert main(["report", str(run), "--out", str(link)]) == 0
    assert link.is_symlink() and "<html" in target.read_text()


@pytest.mark.parametrize("kind", ["fifo", "directory", "directory link"])
def test_report_out_never_replaces_what_is_not_a_regular_file(capsys, tmp_path, run, kind):
    out = tmp_path / "out"
    if kind == "fifo":
        os.mkfifo(out)
    elif kind == "directory":
        out.mkdir()
    else:
        (tmp_path / "folder").mkdir()
        out.symlink_to(tmp_path / "folder")
    before = os.lstat(out)
    refuses(capsys, ["report", str(run), "--out", str(out)], "not a regular file")
    after = os.lstat(out)
    assert (before.st_ino, stat.S_IFMT(before.st_mode)) == (after.st_ino,
                                                            stat.S_IFMT(after.st_mode))


@pytest.mark.parametrize("where", ["under a file", "in /proc"])
def test_out_where_nothing_can_be_written(capsys, tmp_path, checkpoint, pngs, where):
    if where == "under a file":
        (tmp_path / "file").write_text("x")
        out = tmp_path / "file" / "run"
    else:
        out = Path("/proc/mganprior-run")
    assert main(invert_args(checkpoint, [pngs], out)) == 2
    line = error_line(capsys)
    assert str(out).split("/")[1] in line


def test_outputs_are_readable_by_others(run):
    for path in run.rglob("*"):
        if path.is_file() and ".locks" not in path.parts:
            assert stat.S_IMODE(path.stat().st_mode) & 0o044 == 0o044, path


# -- what comes in ---------------------------------------------------------------------------------
def test_names_that_collide_after_sanitising_stay_apart(tmp_path, checkpoint, pngs):
    folder = tmp_path / "names"
    folder.mkdir()
    source = next(pngs.iterdir()).read_bytes()
    for name in ("a b.png", "a_b.png", "a_b-2.png"):
        (folder / name).write_bytes(source)
    out = tmp_path / "run"
    assert main(invert_args(checkpoint, [folder], out)) == 0
    sources = sorted(json.loads(line)["source"] for line in
                     (out / "results.jsonl").read_text().splitlines())
    assert len(sources) == 3 and len(set(sources)) == 3
    assert len([p for p in (out / "images").iterdir() if not p.name.startswith(".")]) == 3


def test_another_file_under_a_known_name_is_refused(capsys, tmp_path, checkpoint, pngs, run):
    other = tmp_path / "other"
    other.mkdir()
    Image.fromarray(np.full((16, 16, 3), 7, np.uint8)).save(other / "img0.png")
    refuses(capsys, invert_args(checkpoint, [other], run), "img0 was inverted from another file")


def bomb(path: Path, side: int = 64) -> Path:
    Image.new("L", (side, side)).save(path)
    return path


@pytest.mark.parametrize("where", ["images", "mask"])
def test_decompression_bombs_are_refused_in_one_line(capsys, tmp_path, checkpoint, pngs,
                                                     monkeypatch, where):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # a 64x64 image is then a bomb
    big = bomb(tmp_path / "big.png")
    args = invert_args(checkpoint, [big] if where == "images" else [pngs], tmp_path / "run")
    if where == "mask":
        args += ["--task", "inpainting", "--mask", str(big), "--resize-mask"]
    refuses(capsys, args, "decompression bomb")
    assert not (tmp_path / "run").exists()


def test_a_bomb_inside_a_run_becomes_a_placeholder_in_the_report(tmp_path, run, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    bomb(run / "images" / "img0" / "degraded.png")
    assert main(["report", str(run), "--out", str(tmp_path / "r.html")]) == 0
    assert "decompression bomb" in (tmp_path / "r.html").read_text()


def test_large_images_and_animations_load_with_a_note(capsys, tmp_path, checkpoint,
                                                      monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 3000)  # 64x64 = 4096: warned, not refused
    folder = tmp_path / "odd"
    folder.mkdir()
    bomb(folder / "large.png")
    frames = [Image.new("RGB", (16, 16), (i * 40, 0, 0)) for i in range(3)]
    frames[0].save(folder / "anim.gif", save_all=True, append_images=frames[1:])
    assert main(invert_args(checkpoint, [folder], tmp_path / "run")) == 0
    err = capsys.readouterr().err
    assert "very large image" in err and "has 3 frames" in err


@pytest.mark.parametrize("kind", ["symlink loop", "fifo", "device"])
def test_paths_that_are_not_files_are_named_for_what_they_are(capsys, tmp_path, checkpoint,
                                                              kind):
    if kind == "symlink loop":
        path = tmp_path / "loop.png"
        path.symlink_to(path)
        expected = "is a symlink loop"
    elif kind == "fifo":
        path = tmp_path / "pipe.png"
        os.mkfifo(path)
        expected = "is a FIFO"
    else:
        path, expected = Path("/dev/null"), "is a device"
    refuses(capsys, invert_args(checkpoint, [path], tmp_path / "run"), expected)


def test_wrongly_typed_configs_get_one_line(capsys, tmp_path, checkpoint, pngs):
    config = Path(checkpoint).with_suffix(".json")
    config.write_text(json.dumps({"family": "pggan", "resolution": "big", "z_dim": 8,
                                  "channels": [16, 12, 8]}))
    refuses(capsys, invert_args(checkpoint, [pngs], tmp_path / "run"), "wrongly typed")


def test_a_wrongly_typed_segmenter_config_gets_one_line(capsys, tmp_path, run):
    import segmentation_models_pytorch as smp

    folder = tmp_path / "seg"
    smp.Unet("resnet18", encoder_weights=None, classes=3, encoder_depth=3,
             decoder_channels=(16, 8, 8)).save_pretrained(str(folder))
    (folder / "segmenter.json").write_text(json.dumps({"labels": 5}))
    refuses(capsys, ["attribute", str(run), "--segmenter-dir", str(folder), "--quiet"],
            "labels must be a list of class names")


# -- settings --------------------------------------------------------------------------------------
@pytest.mark.parametrize(("extra", "message"), [
    (["--perceptual-size", "0"], "--perceptual-size must be between"),
    (["--perceptual-size", "-5"], "--perceptual-size must be between"),
    (["--perceptual-size", "100000"], "--perceptual-size must be between"),
    (["--lr", "inf"], "--lr must be a finite number"),
    (["--lr", "nan"], "--lr must be a finite number"),
    (["--perceptual-lambda", "-1"], "--perceptual-lambda must be a finite number >= 0"),
    (["--perceptual-lambda", "nan"], "--perceptual-lambda must be a finite number >= 0"),
    (["--task", "denoising", "--sigma", "inf"], "--sigma must be a finite number"),
    (["--task", "inpainting", "--mask", "center:0.999"], "hides all 16x16 pixels"),
    (["--codes", "3000000"], "--codes: 3000000 codes need about"),
])
def test_bad_settings_are_refused_before_anything_is_written(capsys, tmp_path, checkpoint, pngs,
                                                            extra, message):
    out = tmp_path / "run"
    refuses(capsys, invert_args(checkpoint, [pngs], out, *extra), message)
    assert not out.exists()


def test_an_all_hole_mask_file_is_refused(capsys, tmp_path, checkpoint, pngs):
    mask = tmp_path / "mask.png"
    Image.new("L", (16, 16), 0).save(mask)
    refuses(capsys, invert_args(checkpoint, [pngs], tmp_path / "run", "--task", "inpainting",
                                "--mask", str(mask)), "has no known pixel")


def test_a_first_attempt_that_failed_does_not_block_the_corrected_rerun(tmp_path, checkpoint,
                                                                        pngs):
    out = tmp_path / "run"
    (out / "images").mkdir(parents=True)
    (out / "config.json").write_text(json.dumps({"codes": 10000}))  # configured, nothing done
    assert main(invert_args(checkpoint, [pngs], out)) == 0
    assert json.loads((out / "config.json").read_text())["codes"] == 2


TRAINING = ["train-generator", "--domain", "bedroom", "--images", "16", "--iterations", "2",
            "--batch", "4", "--resolution", "8", "--channels", "8,8", "--quiet"]


@pytest.mark.parametrize(("extra", "message"), [
    (["--batch", "0"], "--batch must be a positive integer"),
    (["--checkpoint-every", "0"], "--checkpoint-every must be a positive integer"),
    (["--lr", "nan"], "--lr must be a finite number above 0"),
    (["--r1-every", "0"], "--r1-every must be a positive integer"),
    (["--iterations", "-3"], "--iterations must be a positive integer"),
])
def test_bad_training_options_are_refused_up_front(capsys, tmp_path, extra, message):
    out = tmp_path / "gan"
    refuses(capsys, [*TRAINING, "--out", str(out), *extra], message)
    assert not out.exists()


@pytest.mark.parametrize(("extra", "message"), [
    (["--size", "-8"], "--size must be an integer from 8 to 1024"),
    (["--size", "100000"], "--size must be an integer from 8 to 1024"),
    (["--start", "-5"], "--start"),
])
def test_bad_scene_options_are_refused(capsys, tmp_path, extra, message):
    refuses(capsys, ["scenes", "--domain", "bedroom", "--count", "1", "--out",
                     str(tmp_path / "s"), *extra], message)


def test_report_out_an_existing_folder(capsys, tmp_path, run):
    (tmp_path / "folder").mkdir()
    refuses(capsys, ["report", str(run), "--out", str(tmp_path / "folder")],
            "not a regular file")


# -- damage and crashes ----------------------------------------------------------------------------
def test_a_damaged_index_is_skipped_by_resume_attribute_and_report(capsys, tmp_path, checkpoint,
                                                                   pngs, run):
    with (run / "results.jsonl").open("a") as handle:
        handle.write("{this is not json\n")
    assert main(invert_args(checkpoint, [pngs], run)) == 0  # resumes: nothing left to do
    labels = tmp_path / "labels"
    labels.mkdir()
    for name in ("img0", "img1"):
        Image.fromarray(np.zeros((16, 16), np.uint8)).save(labels / f"{name}.png")
    assert main(["attribute", str(run), "--labels", str(labels), "--quiet"]) == 0
    assert "Traceback" not in capsys.readouterr().err


def test_an_abandoned_attribution_folder_is_swept(tmp_path, run):
    stale = run / ".attribution.partial-999999-deadbeef"
    (stale / "figures").mkdir(parents=True)
    (stale / ".building").write_text("")  # its builder died: nothing holds the lock
    labels = tmp_path / "labels"
    labels.mkdir()
    for name in ("img0", "img1"):
        Image.fromarray(np.zeros((16, 16), np.uint8)).save(labels / f"{name}.png")
    assert main(["attribute", str(run), "--labels", str(labels), "--quiet"]) == 0
    assert not stale.exists()


class WritesAFile:
    """Unpickling this writes a file: what a hostile checkpoint does."""

    def __init__(self, target) -> None:
        self.target = str(target)

    def __reduce__(self):
        return (open, (self.target, "w"))


def test_a_malicious_training_checkpoint_runs_nothing(capsys, tmp_path):
    import pickle

    out = tmp_path / "gan"
    out.mkdir()
    marker = tmp_path / "pwned"
    (out / "checkpoint.pt").write_bytes(pickle.dumps({"config": WritesAFile(marker)}))
    assert main([*TRAINING, "--out", str(out)]) == 2
    assert "checkpoint.pt" in error_line(capsys) and not marker.exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tiny tmpfs needs root")
def test_a_full_disk_gets_one_line_and_keeps_what_was_done(capsys, tmp_path, checkpoint, pngs):
    disk = tmp_path / "disk"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(disk)],
                      capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here")
    try:
        big = tmp_path / "big"
        big.mkdir()
        for i in range(40):
            Image.fromarray(np.random.default_rng(i).integers(0, 255, (16, 16, 3), np.uint8)
                            ).save(big / f"n{i:02d}.png")
        assert main(invert_args(checkpoint, [big], disk / "run", "--batch-size", "1")) == 2
        line = error_line(capsys)
        assert "No space left" in line and "intact" in line
        done = [p for p in (disk / "run" / "images").iterdir() if (p / "record.json").is_file()]
        assert done  # the images finished before the disk filled are all there
    finally:
        subprocess.run(["umount", str(disk)], check=False)


def spawn(args: list[str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "mganprior", *args], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for(predicate, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGKILL])
def test_an_interrupted_invert_resumes_to_a_complete_run(tmp_path, checkpoint, tiny_pggan,
                                                         signum):
    folder = tmp_path / "many"
    folder.mkdir()
    for i, image in enumerate(tiny_pggan.sample(6, seed=5)):
        pixels = ((image.clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()
        Image.fromarray(pixels).save(folder / f"m{i}.png")
    out = tmp_path / "run"
    args = ["invert", "--checkpoint", checkpoint, "--images", str(folder), "--out", str(out),
            "--iterations", "200", "--codes", "3", "--batch-size", "1", "--quiet"]
    process = spawn(args)
    wait_for(lambda: any((out / "images").glob("*/record.json")))
    process.send_signal(signum)
    _, err = process.communicate(timeout=60)
    if signum == signal.SIGTERM:
        assert process.returncode == 130 and "rerun the same command to resume" in err
    assert main(args) == 0
    lines = (out / "results.jsonl").read_text().splitlines()
    assert sorted(json.loads(line)["image"] for line in lines) == [f"m{i}" for i in range(6)]


def test_an_interrupted_attribute_leaves_the_previous_one(tmp_path, run):
    labels = tmp_path / "labels"
    labels.mkdir()
    for name in ("img0", "img1"):
        Image.fromarray(np.zeros((16, 16), np.uint8)).save(labels / f"{name}.png")
    assert main(["attribute", str(run), "--labels", str(labels), "--quiet"]) == 0
    before = (run / "attribution" / "attribution.json").read_text()
    process = spawn(["attribute", str(run), "--labels", str(labels), "--threshold", "0.01"])
    wait_for(lambda: any(run.glob(".attribution.partial-*")))
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=60)
    assert (run / "attribution" / "attribution.json").read_text() == before
    assert main(["attribute", str(run), "--labels", str(labels), "--quiet"]) == 0
    assert not list(run.glob(".attribution.partial-*"))


def test_hostile_names_are_escaped_in_the_report(tmp_path, checkpoint):
    folder = tmp_path / "evil"
    folder.mkdir()
    name = "<script>alert(1)<"
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(folder / "x.png")
    out = tmp_path / "run"
    assert main(invert_args(checkpoint, [folder], out)) == 0
    (out / "config.json").write_text((out / "config.json").read_text().replace(
        '"command"', json.dumps(name)))
    assert main(["report", str(out), "--out", str(tmp_path / "r.html")]) == 0
    assert name not in (tmp_path / "r.html").read_text()


def test_a_malicious_generator_pth_is_refused(capsys, tmp_path, pngs):
    marker = tmp_path / "pwned"
    torch.save({"layer1.weight": WritesAFile(marker)}, tmp_path / "evil.pth")
    assert main(invert_args(tmp_path / "evil.pth", [pngs], tmp_path / "run")) == 2
    assert not marker.exists() and not (tmp_path / "run").exists()


@pytest.mark.parametrize("command", ["train-generator", "train-segmenter", "layers"])
def test_a_killed_command_resumes_where_it_stopped(tmp_path, checkpoint, pngs, command):
    out = tmp_path / "out"
    if command == "train-generator":
        args = ["train-generator", "--domain", "bedroom", "--images", "16", "--iterations",
                "40", "--batch", "4", "--resolution", "8", "--channels", "8,8",
                "--checkpoint-every", "5", "--out", str(out), "--quiet"]
        started = out / "checkpoint.pt"
    elif command == "train-segmenter":
        args = ["train-segmenter", "--out", str(out), "--images-per-domain", "4",
                "--validation-per-domain", "2", "--size", "32", "--iterations", "30",
                "--batch", "4", "--checkpoint-every", "3", "--quiet"]
        started = out / "checkpoint.pt"
    else:
        args = ["layers", "--checkpoint", checkpoint, "--images", str(pngs), "--tasks",
                "inversion", "--layers", "2,4", "--iterations", "150", "--codes", "2",
                "--batch-size", "1", "--out", str(out), "--quiet"]
        started = out / "cells"
    process = spawn(args)
    wait_for(lambda: started.exists() and (command != "layers" or
                                           any(started.glob("**/record.json"))), timeout=120)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=60)
    assert main(args) == 0
    if command == "layers":
        summary = json.loads((out / "summary.json").read_text())
        assert summary["done"] == summary["total"] == 3
    elif command == "train-generator":
        assert json.loads((out / "training.json").read_text())["steps"] == 40
    else:
        assert json.loads((out / "training.json").read_text())["training"]["steps"] == 30
