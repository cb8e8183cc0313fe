"""Many processes, one run directory: claims, per-image records as the source of truth, indexes
that are appended to and rebuilt, and a rerun that finishes exactly the missing work."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from helpers import REPO, make_tiny_pggan, write_png
from inversion.generators.saving import save_generator
from inversion.images import load_images
from inversion.recipes import get_recipe
from inversion.rundir import RunDirectory
from inversion.runs import RunSettings, run_inversion
from inversion.tasks import Inversion
from mganprior.cli import main
from mganprior.core.claims import Claims
from mganprior.core.errors import InputError
from mganprior.core.sharding import Shard

WORKER = textwrap.dedent("""
    import json, sys, time
    from pathlib import Path
    from inversion.generators.formats import load_generator_file
    from inversion.images import load_images
    from inversion.recipes import get_recipe
    from inversion.runs import RunSettings, run_inversion
    from inversion.tasks import Inversion

    checkpoint, images, out, go = sys.argv[1:5]
    generator = load_generator_file(checkpoint)
    loaded = load_images([images], 16)
    recipe = get_recipe("adam", "inversion").with_overrides(iterations=60, codes=3, layer=4)
    settings = RunSettings(generator, {"name": "tiny"}, Inversion(), recipe, batch_size=1,
                           progress=False)
    print("ready", flush=True)
    while not Path(go).exists():
        time.sleep(0.01)
    _, summary = run_inversion(settings, loaded, out, log=lambda message: None)
    print(json.dumps(summary["last_session_images"]), flush=True)
""")


def settings_for(generator, iterations=20):
    recipe = get_recipe("adam", "inversion").with_overrides(iterations=iterations, codes=3,
                                                            layer=4)
    return RunSettings(generator, {"name": "tiny"}, Inversion(), recipe, batch_size=1,
                       progress=False)


def spawn(code: str, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", code, *map(str, args)], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.fixture
def six_pngs(tmp_path, tiny_pggan):
    from inversion.images import save_png

    folder = tmp_path / "images"
    folder.mkdir()
    for i, image in enumerate(tiny_pggan.sample(6, seed=3)):
        save_png(image, folder / f"img{i}.png")
    return folder


def test_two_uncoordinated_processes_split_one_run(tmp_path, six_pngs):
    checkpoint = save_generator(make_tiny_pggan(), tmp_path / "tiny.safetensors")
    out, go = tmp_path / "run", tmp_path / "go"
    workers = [spawn(WORKER, checkpoint, six_pngs, out, go) for _ in range(2)]
    for worker in workers:
        assert worker.stdout.readline().strip() == "ready", worker.stderr.read()
    go.touch()
    done = []
    for worker in workers:
        stdout, stderr = worker.communicate(timeout=120)
        assert worker.returncode == 0, stderr
        done.append(json.loads(stdout.strip().splitlines()[-1]))
    assert sum(done) == 6, done  # every image inverted once, by one of the two
    run = RunDirectory(out)
    lines = (out / "results.jsonl").read_text().splitlines()
    assert sorted(json.loads(line)["image"] for line in lines) == [f"img{i}" for i in range(6)]
    assert run.finished() == {f"img{i}" for i in range(6)} and run.index_is_current()
    assert json.loads((out / "summary.json").read_text())["images"] == 6
    assert not list((out / "images").glob(".partial-*"))


HOLDER = textwrap.dedent("""
    import sys, time
    from mganprior.core.claims import Claims
    assert Claims(sys.argv[1]).try_claim(sys.argv[2])
    print("held", flush=True)
    time.sleep(120)
""")


def test_a_live_claim_is_respected_and_a_killed_one_blocks_nothing(tmp_path, face_pngs,
                                                                    tiny_pggan):
    images = load_images([face_pngs], 16)
    run = RunDirectory(tmp_path / "run")
    holder = spawn(HOLDER, run.claims.folder, "img1")
    try:
        assert holder.stdout.readline().strip() == "held", holder.stderr.read()
        assert run.claims.held_elsewhere("img1")
        messages = []
        _, summary = run_inversion(settings_for(tiny_pggan), images, run.path,
                                   log=messages.append)
        assert run.finished() == {"img0", "img2"} and summary["last_session_images"] == 2
        assert any("another process" in m for m in messages)
    finally:
        os.kill(holder.pid, signal.SIGKILL)  # dies holding its claim
        holder.wait()
    assert not run.claims.held_elsewhere("img1")
    _, summary = run_inversion(settings_for(tiny_pggan), images, run.path)
    assert summary["last_session_images"] == 1 and run.finished() == {"img0", "img1", "img2"}
    assert [r["image"] for r in run.records()] == ["img0", "img2", "img1"]


def test_the_folders_are_the_truth_and_the_index_is_rebuilt_from_them(tmp_path, face_pngs,
                                                                      tiny_pggan):
    images = load_images([face_pngs], 16)
    run, _ = run_inversion(settings_for(tiny_pggan), images, tmp_path / "run")
    original = run.records()
    run.results_path.unlink()
    assert run.records() == [] and not run.index_is_current()
    run.rebuild_index()
    assert run.records() == original and run.index_is_current()
    with run.results_path.open("a") as handle:
        handle.write('{"image": "img1", "status": "ok", "psnr": 99}\n{broken\n')
    problems: list[str] = []
    records = run.records(problems)
    assert problems == ["results.jsonl line 5 is damaged and was skipped"]
    assert [r["image"] for r in records] == ["img0", "img2", "img1"]  # the last line wins
    assert not run.index_is_current()
    # a rerun finds nothing to do and repairs the index on its way out
    _, summary = run_inversion(settings_for(tiny_pggan), images, run.path)
    assert summary["last_session_images"] == 0 and run.records() == original


def test_a_run_from_before_per_image_records_is_adopted(tmp_path, face_pngs, tiny_pggan):
    images = load_images([face_pngs], 16)
    run, _ = run_inversion(settings_for(tiny_pggan), images, tmp_path / "run")
    for name in ("img0", "img1", "img2"):
        run.image_file(name, "record").unlink()  # what older versions wrote
    assert run.finished() == set()
    run.rebuild_index()
    assert run.finished() == {"img0", "img1", "img2"} and run.load_result().batch == 3


def test_another_file_under_a_finished_name_is_refused(tmp_path, tiny_pggan):
    folder = tmp_path / "images"
    folder.mkdir()
    write_png(folder / "face.png", tiny_pggan.sample(1, seed=1).add(1).mul(127.5).byte()[0]
              .permute(1, 2, 0).numpy())
    run_inversion(settings_for(tiny_pggan), load_images([folder], 16), tmp_path / "run")
    write_png(folder / "face.png", tiny_pggan.sample(1, seed=2).add(1).mul(127.5).byte()[0]
              .permute(1, 2, 0).numpy())
    with pytest.raises(InputError, match="face was inverted from another file"):
        run_inversion(settings_for(tiny_pggan), load_images([folder], 16), tmp_path / "run")


def test_claims_are_exclusive_within_and_between_holders(tmp_path):
    first, second = Claims(tmp_path), Claims(tmp_path)
    assert first.try_claim("a") and not second.try_claim("a")
    assert second.held_elsewhere("a") and not first.held_elsewhere("a")
    first.release("a", finished=True)
    assert not (tmp_path / "a.lock").exists() and second.try_claim("a")
    with first.hold(["a", "b"]) as taken:
        assert taken == ["b"]
    assert first.try_claim("b")


def test_two_identical_studies_on_one_folder_finish_without_doubling(tmp_path, face_pngs):
    checkpoint = save_generator(make_tiny_pggan(), tmp_path / "tiny.safetensors")
    out = tmp_path / "study"
    args = ["layers", "--checkpoint", str(checkpoint), "--images", str(face_pngs), "--tasks",
            "inversion", "--layers", "2,4", "--iterations", "20", "--codes", "2",
            "--batch-size", "1", "--out", str(out), "--quiet"]
    processes = [subprocess.Popen([sys.executable, "-m", "mganprior", *args], cwd=REPO,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for _ in range(2)]
    for process in processes:
        _, err = process.communicate(timeout=120)
        assert process.returncode == 0, err
        assert "Traceback" not in err
    rows = (out / "layers.csv").read_text().splitlines()[1:]
    keys = [tuple(row.split(",")[i] for i in (2, 5, 7, 8)) for row in rows]
    assert len(keys) == len(set(keys)) == 3 * 3 * 2  # (cell, image, metric), once each


def run_cli(*args: str, launcher: tuple[str, ...] = ()) -> subprocess.Popen:
    command = [*launcher, "-m", "mganprior", *args] if launcher else \
        [sys.executable, "-m", "mganprior", *args]
    return subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})


def finish(*processes: subprocess.Popen) -> None:
    for process in processes:
        _, err = process.communicate(timeout=180)
        assert process.returncode == 0, err


def latents_of(run) -> dict:
    return {name: load_file(str(run.image_file(name, "latents")))
            for name in sorted(run.finished())}


@pytest.fixture
def tiny_checkpoint(tmp_path):
    return str(save_generator(make_tiny_pggan(), tmp_path / "tiny.safetensors"))


def test_torchrun_ranks_fill_one_run_as_one_process_would(tmp_path, tiny_checkpoint, six_pngs):
    # torch's beta2: the recipe's 0.95 amplifies the batches' rounding past 1e-5 in 20 steps
    args = ["invert", "--checkpoint", tiny_checkpoint, "--images", str(six_pngs),
            "--iterations", "20", "--codes", "3", "--layer", "4", "--batch-size", "2",
            "--adam-beta2", "0.999", "--quiet", "--out"]
    assert main([*args, str(tmp_path / "one")]) == 0
    torchrun = (str(Path(sys.executable).with_name("torchrun")), "--standalone",
                "--nproc-per-node", "2")
    finish(run_cli(*args, str(tmp_path / "two"), launcher=torchrun))
    one, two = RunDirectory(tmp_path / "one"), RunDirectory(tmp_path / "two")
    lines = [json.loads(line)["image"] for line in
             (tmp_path / "two" / "results.jsonl").read_text().splitlines()]
    assert sorted(lines) == [f"img{i}" for i in range(6)]  # none lost, none twice
    a, b = latents_of(one), latents_of(two)
    assert a.keys() == b.keys()
    for name in a:  # per-image seeds: the same codes, up to the batch's float rounding
        torch.testing.assert_close(a[name]["codes"], b[name]["codes"], atol=1e-5, rtol=1e-5)
    psnr = {r["image"]: r["psnr"] for r in one.records()}
    for record in two.records():
        assert record["psnr"] == pytest.approx(psnr[record["image"]], abs=0.01)
    assert json.loads((tmp_path / "two" / "summary.json").read_text())["images"] == 6
    # torchrun's OMP_NUM_THREADS=1 is replaced by each rank's share of the cores
    assert two.config()["threads"] == max(1, len(os.sched_getaffinity(0)) // 2)


def test_shards_of_a_study_and_of_an_attribution_add_up_to_the_whole(tmp_path, tiny_checkpoint,
                                                                     six_pngs):
    study = ["layers", "--checkpoint", tiny_checkpoint, "--images", str(six_pngs), "--tasks",
             "inversion", "--layers", "2,4", "--iterations", "10", "--codes", "2", "--quiet"]
    finish(*(run_cli(*study, "--shard", f"{i}/2", "--out", str(tmp_path / "sharded"))
             for i in range(2)))
    assert main([*study, "--out", str(tmp_path / "whole")]) == 0
    for name in ("sharded", "whole"):
        assert json.loads((tmp_path / name / "summary.json").read_text())["done"] == 3
    rows = {name: sorted((r.split(",")[2], r.split(",")[7], r.split(",")[8]) for r in
                         (tmp_path / name / "layers.csv").read_text().splitlines()[1:])
            for name in ("sharded", "whole")}
    assert rows["sharded"] == rows["whole"] and len(rows["whole"]) == 3 * 6 * 2
    assert (tmp_path / "sharded" / "figures" / "psnr_vs_layer.png").is_file()

    labels = tmp_path / "labels"
    labels.mkdir()
    from PIL import Image

    for i in range(6):
        label = np.zeros((16, 16), np.uint8)
        label[8:] = 1
        Image.fromarray(label).save(labels / f"img{i}.png")
    run = tmp_path / "whole" / "cells" / "tiny" / "inversion" / "04-layer4-n2"
    attribute = ["attribute", str(run), "--labels", str(labels), "--quiet"]
    finish(*(run_cli(*attribute, "--shard", f"{i}/2", "--out", str(tmp_path / "a2"))
             for i in range(2)))
    assert main([*attribute, "--out", str(tmp_path / "a1")]) == 0
    tables = {name: sorted((tmp_path / name / "attribution.csv").read_text().splitlines()[1:])
              for name in ("a1", "a2")}
    assert tables["a1"] == tables["a2"] and len(tables["a1"]) == 6 * 2
    assert (tmp_path / "a1" / "classes.csv").read_text() == \
        (tmp_path / "a2" / "classes.csv").read_text()
    assert not (run / ".attribution-shards").exists()


@pytest.mark.parametrize(("environ", "shard", "flags", "expected"), [
    ({}, Shard(0, 1), (None, None), None),  # one process: torch's default
    ({}, Shard(0, 2, "flag"), (2, None), 8),  # --shard 0/2 --local-processes 2
    ({}, Shard(0, 2, "flag"), (None, None), None),  # --shard alone: other machines
    ({"LOCAL_WORLD_SIZE": "4", "OMP_NUM_THREADS": "1"}, Shard(1, 4, "torchrun"), (None, None),
     4),  # torchrun's OMP_NUM_THREADS=1 is its default, not the user's
    ({"LOCAL_WORLD_SIZE": "4", "OMP_NUM_THREADS": "3"}, Shard(1, 4, "torchrun"), (None, None),
     None),  # a user's value is kept
    ({"SLURM_NTASKS_PER_NODE": "3(x2)"}, Shard(0, 6, "slurm"), (None, None), 5),
    ({"LOCAL_WORLD_SIZE": "32"}, Shard(0, 32, "torchrun"), (None, None), 1),  # at least one
    ({"LOCAL_WORLD_SIZE": "4"}, Shard(0, 4, "torchrun"), (None, 6), 6),  # --threads wins
])
def test_local_processes_share_the_cores(environ, shard, flags, expected):
    from mganprior.core.sharding import thread_share

    assert thread_share(shard, *flags, environ=environ, cores=16) == expected


def test_a_bad_thread_setting_is_one_line_naming_it():
    from mganprior.core.sharding import thread_share

    with pytest.raises(InputError, match="threads must be at least 1"):
        thread_share(Shard(0, 1), None, 0, environ={}, cores=4)
    with pytest.raises(InputError, match="local_processes must be at least 1"):
        thread_share(Shard(0, 2, "flag"), 0, None, environ={}, cores=4)
