"""Every reader validates before it builds: malformed and hostile generator files (NVIDIA
pickles, rosinality checkpoints) get one line, and nothing large is allocated from a declared
size."""

from __future__ import annotations

import sys

import pytest
import torch

from helpers import make_tiny_stylegan2, nvidia_pickle
from inversion.generators.formats import load_generator_file
from mganprior.core.errors import InputError

HUGE = torch.zeros(1).expand(10 ** 5, 10 ** 5)  # 40 GB declared over 4 bytes


def block(root: dict, name: str) -> dict:
    """The stored state of ``synthesis.NAME`` inside a network's root state."""
    return root["_modules"]["synthesis"].meta["state"]["_modules"][name].meta["state"]


NVIDIA_CASES = [
    ("z_dim missing", {"top": {"z_dim": None}}, r"G_ema's z_dim must be a whole number, got None"),
    ("z_dim text", {"top": {"z_dim": "x"}}, r"z_dim must be a whole number, got 'x'"),
    ("z_dim NaN", {"top": {"z_dim": float("nan")}}, r"z_dim must be a whole number, got nan"),
    ("z_dim negative", {"top": {"z_dim": -8}}, r"z_dim must be a whole number, got -8"),
    ("z_dim huge", {"top": {"z_dim": 3 * 10 ** 7}},
     r"z_dim must be an integer in \[1, 8192\], got 30000000"),
    ("resolution huge", {"top": {"img_resolution": 10 ** 9}},
     r"resolution must be an integer in \[1, 4096\]"),
    ("init kwargs a list", {"top": {"_init_kwargs": [1, 2]}}, r"_init_kwargs is a list"),
    ("parameters a list", {"edit": lambda root: block(root, "b8").__setitem__(
        "_parameters", [1, 2])}, r"module synthesis\.b8\.: _parameters is a list"),
    ("no conv1", {"edit": lambda root: block(root, "b8")["_modules"].pop("conv1")},
     r"lacks synthesis\.b8\.conv1\.weight"),
    ("stride-0 filter", {"edit": lambda root: block(root, "b8")["_buffers"].__setitem__(
        "resample_filter", torch.zeros(1).expand(10 ** 10, 4, 4))},
     r"synthesis\.b8\.resample_filter declares shape \[10000000000, 4, 4\]"),
    ("a weight not a tensor", {"edit": lambda root: block(root, "b4")["_parameters"].__setitem__(
        "const", [1.0])}, r"synthesis\.b4\.const is a list, not a tensor"),
]


@pytest.mark.parametrize("case", NVIDIA_CASES, ids=[case[0] for case in NVIDIA_CASES])
def test_malformed_nvidia_pickles_get_one_line(tmp_path, case):
    _, options, message = case
    path = nvidia_pickle(make_tiny_stylegan2(), tmp_path / "bad.pkl", **options)
    with pytest.raises(InputError, match=message):
        load_generator_file(path)


def test_a_pickle_nested_beyond_the_recursion_limit_gets_one_line(tmp_path):
    def nest(root: dict) -> None:
        inner = root
        for _ in range(3000):
            child = {"_parameters": {}, "_buffers": {}, "_modules": {}}
            inner["_modules"]["deeper"] = child
            inner = child

    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(40000)  # only to write the file
    try:
        path = nvidia_pickle(make_tiny_stylegan2(), tmp_path / "deep.pkl", edit=nest)
    finally:
        sys.setrecursionlimit(limit)
    with pytest.raises(InputError, match=r"damaged or not a pickle|malformed|not a stored"):
        load_generator_file(path)


def test_state_built_onto_an_allowed_class_stays_in_that_file(tmp_path):
    from inversion.generators.stylegan2_files import EasyDict, read_restricted_pickle

    # GLOBAL dnnlib.util EasyDict; BUILD (None, {"__getattr__": 5}) onto the class itself
    payload = (b"\x80\x02cdnnlib.util\nEasyDict\nN}X\x0b\x00\x00\x00__getattr__K\x05s\x86b.")
    path = tmp_path / "build.pkl"
    path.write_bytes(payload)
    built = read_restricted_pickle(path)
    assert built.__getattr__ == 5  # the file changed its own stand-in ...
    assert EasyDict.__dict__.get("__getattr__") is None  # ... never the reader's class
    assert EasyDict(a=1)["a"] == 1


ROSINALITY_CASES = [
    ("args a list", lambda f: f.__setitem__("args", [1, 2]), None),
    ("lr_mlp text", lambda f: f.__setitem__("args", {"lr_mlp": "x"}),
     r"args\.lr_mlp must be a number, got 'x'"),
    ("latent_avg an int", lambda f: f.__setitem__("latent_avg", 3),
     r"latent_avg is a int, not a tensor"),
    ("input 1-d", lambda f: f["g_ema"].__setitem__("input.input", torch.zeros(8)),
     r"input\.input has shape \[8\], not 4-d"),
    ("stride-0 blur", lambda f: f["g_ema"].__setitem__("convs.0.conv.blur.kernel", HUGE),
     r"convs\.0\.conv\.blur\.kernel declares shape \[100000, 100000\]"),
    ("wide style", lambda f: f["g_ema"].__setitem__(
        "style.1.weight", torch.zeros(1).expand(32, 3 * 10 ** 7)),
     r"style\.1\.weight declares shape \[32, 30000000\]"),
]


def rosinality_file() -> dict:
    from helpers import SHARED

    fixture = SHARED / "fixtures" / "stylegan2" / "rosinality-tiny32.pt"
    if not fixture.is_file():
        pytest.skip("the rosinality fixture lives in ../shared/fixtures/stylegan2, which this "
                    "clone does not have")
    return torch.load(fixture, weights_only=True)


@pytest.mark.parametrize("case", ROSINALITY_CASES, ids=[case[0] for case in ROSINALITY_CASES])
def test_malformed_rosinality_files_get_one_line_or_load(tmp_path, case):
    _, damage, message = case
    content = rosinality_file()
    damage(content)
    path = tmp_path / "bad.pt"
    torch.save(content, path)
    if message is None:  # args that are no dict are ignored: the shapes say everything
        assert load_generator_file(path).resolution == 32
        return
    with pytest.raises(InputError, match=message):
        load_generator_file(path)


def test_every_reader_error_is_one_line(tmp_path):
    path = nvidia_pickle(make_tiny_stylegan2(), tmp_path / "bad.pkl", top={"z_dim": "x"})
    with pytest.raises(InputError) as caught:
        load_generator_file(path)
    assert "\n" not in str(caught.value)


# -- boundary files and direction names -----------------------------------------------------------
def npy_header(shape: tuple[int, ...], dtype: str = "<f8") -> bytes:
    """A version 1.0 .npy header declaring ``shape`` (no data follows)."""
    header = f"{{'descr': '{dtype}', 'fortran_order': False, 'shape': {shape}, }}"
    header = header.ljust(118) + "\n"
    return b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header.encode()


@pytest.mark.parametrize("content, message", [
    (b"", "is not a .npy array"),
    (npy_header((1, 10 ** 12)), r"shape \[1, 1000000000000\]; a boundary is \(1, d\)"),
    (npy_header((1, 8)), "is truncated: its header declares 8 numbers"),
    (npy_header((1, 8), "|O"), "is not a .npy array|holds a object array"),
])
def test_damaged_boundary_files_get_one_line(tmp_path, tiny_pggan, content, message):
    from analysis.directions import load_boundary

    path = tmp_path / "b.npy"
    path.write_bytes(content)
    with pytest.raises(InputError, match=message):
        load_boundary(path, tiny_pggan)


@pytest.mark.parametrize("sidecar, vector, message", [
    ("[1, 2]", None, "sidecar .* must hold a JSON object, got list"),
    ('{"space": 5}', None, "sidecar .*: space must be one of z, w, got 5"),
    (None, 1e300, "not finite or too large"),
])
def test_boundary_sidecars_and_values_are_checked(tmp_path, tiny_pggan, sidecar, vector,
                                                  message):
    import warnings

    import numpy as np

    from analysis.directions import load_boundary

    path = tmp_path / "b.npy"
    np.save(path, np.full((1, 8), vector if vector is not None else 1.0))
    if sidecar is not None:
        path.with_suffix(".json").write_text(sidecar)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no numpy overflow warning before the refusal
        with pytest.raises(InputError, match=message):
            load_boundary(path, tiny_pggan)


def test_a_direction_name_cannot_leave_the_output_folder(tmp_path, tiny_pggan, capsys):
    from inversion.generators import save_generator
    from mganprior.cli import main

    checkpoint = str(save_generator(tiny_pggan, tmp_path / "tiny.safetensors"))
    out = tmp_path / "deep" / "dirs"
    for name in ("../../escaped", str(tmp_path / "absolute")):
        assert main(["directions", "interfacegan", "--checkpoint", checkpoint, "--attribute",
                     "brightness", "--samples", "200", "--fraction", "0.1", "--name", name,
                     "--out", str(out)]) == 0
    flattened = str(tmp_path / "absolute").strip("/").replace("/", "_")
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["escaped.npy", "escaped.json", f"{flattened}.npy", f"{flattened}.json"])
    assert not (tmp_path / "escaped.npy").exists() and not (tmp_path / "absolute.npy").exists()


def test_an_edit_that_would_not_fit_in_memory_is_refused_up_front():
    from analysis.editing import check_frame_memory

    with pytest.raises(InputError, match=r"steps: 4 images x 21 code sets x 1000 steps of 4096 px"):
        check_frame_memory(4, 21, 1000, 4096)
    check_frame_memory(4, 21, 7, 64)  # the demo's size passes


# -- the sharding environment ---------------------------------------------------------------------
@pytest.mark.parametrize("environ, message", [
    ({"RANK": "abc", "WORLD_SIZE": "1"}, "environment variable RANK must be an integer, got 'abc'"),
    ({"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "zz"}, "LOCAL_RANK must be an integer"),
    ({"RANK": "3", "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "1"},
     r"RANK and WORLD_SIZE give shard 3 of 2"),
    ({"RANK": "0", "WORLD_SIZE": "2"}, "MASTER_ADDR and MASTER_PORT are not"),
    ({"SLURM_ARRAY_TASK_ID": "x", "SLURM_ARRAY_TASK_COUNT": "4"},
     "SLURM_ARRAY_TASK_ID must be an integer, got 'x'"),
    ({"SLURM_ARRAY_TASK_ID": "9", "SLURM_ARRAY_TASK_COUNT": "4"},
     r"SLURM_ARRAY_TASK_ID, SLURM_ARRAY_TASK_MIN and SLURM_ARRAY_TASK_COUNT give shard 9 of 4"),
])
def test_the_sharding_environment_is_named_when_it_is_wrong(environ, message):
    from mganprior.core.sharding import current_shard

    with pytest.raises(InputError, match=message) as caught:
        current_shard(None, environ)
    assert "--shard" not in str(caught.value)


def test_an_unexpected_error_is_one_line_and_the_traceback_waits_for_debug(capsys,
                                                                             monkeypatch):
    from mganprior import cli

    def broken(args):
        raise ZeroDivisionError("division by zero\nsecond line")

    monkeypatch.setitem(cli.COMMANDS, "zoo", cli.COMMANDS["zoo"].__class__(
        "zoo", cli.COMMANDS["zoo"].add_arguments, broken))
    assert cli.main(["zoo"]) == 3
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "internal error (a bug" in error
    assert "ZeroDivisionError: division by zero second line while running `mganprior zoo`" in error
    with pytest.raises(ZeroDivisionError):
        cli.main(["--debug", "zoo"])


def test_wording_names_the_flag_users_type(capsys, tmp_path, tiny_pggan):
    from analysis.directions import sefa_directions
    from mganprior.cli import flag_for

    assert flag_for("code_sets") == "--codes"
    with pytest.raises(InputError, match=r"layers 'zzz': a pggan generator has one layer"):
        sefa_directions(tiny_pggan, 2, layers="zzz")
    assert len(sefa_directions(tiny_pggan, 2, layers="0")) == 2


def test_scenes_are_written_one_at_a_time(tmp_path, monkeypatch, capsys):
    """A huge count streams: the first scene is on disk before the second is rendered."""
    from mganprior.cli import main
    from mganprior.scenes import datasets as scene_datasets

    rendered = []
    real = scene_datasets.render

    def watched(domain, seed, size=64):
        if rendered:  # every earlier scene is already written
            assert (tmp_path / "out" / f"{domain}-{rendered[-1]:06d}.png").is_file()
        rendered.append(seed)
        if len(rendered) == 3:
            raise KeyboardInterrupt  # stop a count of a billion after three
        return real(domain, seed, size=size)

    monkeypatch.setattr(scene_datasets, "render", watched)
    assert main(["scenes", "--domain", "bedroom", "--count", "1000000000", "--size", "32",
                 "--out", str(tmp_path / "out"), "--quiet"]) == 130
    assert sorted(p.name for p in (tmp_path / "out").glob("*.png")) == [
        "bedroom-000000.png", "bedroom-000001.png"]


# -- damaged run folders --------------------------------------------------------------------------
def test_index_counts_only_complete_folders_and_names_the_others(tmp_path, capsys, tiny_pggan,
                                                                  face_pngs):
    import json

    from inversion.generators import save_generator
    from inversion.rundir import RunDirectory
    from mganprior.cli import main

    checkpoint = str(save_generator(tiny_pggan, tmp_path / "tiny.safetensors"))
    run = tmp_path / "run"
    assert main(["invert", "--checkpoint", checkpoint, "--images", str(face_pngs), "--out",
                 str(run), "--iterations", "2", "--codes", "2", "--quiet"]) == 0
    images = run / "images"
    (images / "img0" / "record.json").write_text('{"image": "img0", "sta')  # truncated
    (images / "img1" / "latents.safetensors").write_bytes(b"\x10\x00")  # truncated latents
    (images / "copy").symlink_to(images / "img2", target_is_directory=True)
    (images / "bare").mkdir()
    (images / "bare" / "record.json").write_text(json.dumps({"image": "bare", "status": "ok"}))
    capsys.readouterr()
    assert main(["index", str(run)]) == 0
    captured = capsys.readouterr()
    for name, why in (("img0", "record.json is damaged"), ("img1", "latents.safetensors is "
                      "damaged"), ("copy", "is a link"), ("bare", "record.json lacks a status")):
        assert f"images/{name}: {why}" in captured.err, name
    records = RunDirectory(run).records()
    assert [r["image"] for r in records] == ["img2"]
    with pytest.raises(InputError, match=r"images/bare: record\.json lacks a status.*mganprior "
                                         r"index"):
        RunDirectory(run).load_result()  # loading the run's images names what is damaged


# -- a torchrun rank whose peer never comes -------------------------------------------------------
def lonely_rank(tmp_path, tiny_pggan, face_pngs, **extra_env):
    """``mganprior invert`` as rank 0 of 2 on loopback, with no rank 1: (process, port)."""
    import os
    import socket
    import subprocess

    from inversion.generators import save_generator

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    checkpoint = save_generator(tiny_pggan, tmp_path / "tiny.safetensors")
    environ = {**os.environ, "RANK": "0", "WORLD_SIZE": "2", "LOCAL_RANK": "0",
               "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), **extra_env}
    process = subprocess.Popen(
        [sys.executable, "-m", "mganprior", "invert", "--checkpoint", str(checkpoint),
         "--images", str(face_pngs), "--out", str(tmp_path / "run"), "--iterations", "2",
         "--quiet"], env=environ, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return process, port


def test_a_rank_without_its_peer_gives_up_after_the_rendezvous_timeout(tmp_path, tiny_pggan,
                                                                     face_pngs):
    process, _ = lonely_rank(tmp_path, tiny_pggan, face_pngs, MGANPRIOR_RENDEZVOUS_TIMEOUT="2")
    _, error = process.communicate(timeout=120)
    assert process.returncode == 2
    assert "rank 0 of 2 could not meet the other ranks within 2 s" in error
    assert error.count("\n") == 1


def test_a_rank_waiting_for_its_peer_stops_on_sigterm(tmp_path, tiny_pggan, face_pngs):
    import signal
    import socket
    import time

    process, port = lonely_rank(tmp_path, tiny_pggan, face_pngs)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:  # rank 0 listens once it waits in the rendezvous
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                break
        assert process.poll() is None, process.communicate()
        time.sleep(0.2)
    time.sleep(1.0)
    sent = time.monotonic()
    process.send_signal(signal.SIGTERM)
    process.communicate(timeout=30)
    assert time.monotonic() - sent < 5 and process.returncode == -signal.SIGTERM


# -- transformers folders -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def segformer_folder(tmp_path_factory):
    pytest.importorskip("transformers", reason="the hf extra is not installed")
    from helpers import tiny_hf_folder

    return tiny_hf_folder("segformer", 16, tmp_path_factory.mktemp("seg") / "model")


@pytest.mark.parametrize("file, change, message", [
    ("config.json", {"id2label": ["wall", "bed"]}, r"has a config .* transformers cannot read"),
    ("preprocessor_config.json", [1, 2], r"must hold a JSON object, got list"),
    ("preprocessor_config.json", {"size": {"height": "x", "width": 8}}, r"size must give sides"),
    ("preprocessor_config.json", {"size": 0}, r"size must give sides in \[1, 4096\], got 0"),
    ("preprocessor_config.json", {"size": {"height": 60000, "width": 60000}},
     r"size must give sides in \[1, 4096\]"),
    ("preprocessor_config.json", {"rescale_factor": "x"}, r"rescale_factor must be a number"),
    ("preprocessor_config.json", {"image_mean": "abc"}, r"image_mean must be one or three"),
    ("preprocessor_config.json", {"image_std": [0, 0, 0]}, r"image_std must not be 0"),
    ("preprocessor_config.json", {"size": None},
     r"preprocessor_config\.json: the image processor cannot prepare an image"),
])
def test_malformed_transformers_folders_get_one_line(tmp_path, segformer_folder, file, change,
                                                     message):
    from helpers import copy_with_json
    from segmentation.formats import load_segmenter_dir

    folder = copy_with_json(segformer_folder, tmp_path / "model", file, change)
    with pytest.raises(InputError, match=message):
        load_segmenter_dir(folder)


def test_a_pickled_transformers_checkpoint_is_refused_without_running_it(tmp_path,
                                                                          segformer_folder):
    import shutil

    from segmentation.formats import load_segmenter_dir

    folder = tmp_path / "model"
    shutil.copytree(segformer_folder, folder)
    (folder / "model.safetensors").unlink()
    marker = tmp_path / "ran"
    torch.save({"x": WritesAMarker(marker)}, folder / "pytorch_model.bin")
    with pytest.raises(InputError, match="holds no weights transformers can load"):
        load_segmenter_dir(folder)
    assert not marker.exists()


class WritesAMarker:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (str(self.path), "w"))


def test_more_samples_than_memory_holds_are_refused_before_sampling(tiny_pggan):
    from analysis.directions import brightness, sample_and_score

    with pytest.raises(InputError, match=r"samples: 1000000000000 latents of 8 numbers need"):
        sample_and_score(tiny_pggan, brightness, 10 ** 12)


# -- numpy arrays inside NVIDIA pickles (StyleGAN3 modules keep some) ------------------------------
class DeclaredArray:
    """Pickles as numpy does (``_reconstruct`` then ``BUILD``), with any state a test wants."""

    def __init__(self, shape, dtype, data: bytes, start=(0,)):
        self.shape, self.dtype, self.data, self.start = shape, dtype, data, start

    def __reduce__(self):
        import numpy as np

        return (np._core.multiarray._reconstruct, (np.ndarray, self.start, b"b"),
                (1, self.shape, np.dtype(self.dtype), False, self.data))


@pytest.mark.parametrize("content, message", [
    (lambda np: np.array([1, "a"], dtype=object), r"refers to numpy\.dtype|numpy dtype object"),
    (lambda np: np.zeros(2, dtype=[("a", "i4")]), "numpy dtype"),
    (lambda np: DeclaredArray((10 ** 6,), "f4", b"1234"), r"shape \[1000000\] over 4 bytes"),
    (lambda np: DeclaredArray((1,), "f4", b"1234", start=(10 ** 9,)), "does not start empty"),
])
def test_only_numeric_numpy_arrays_of_their_declared_size_are_read(tmp_path, content, message):
    import pickle

    import numpy as np

    from inversion.generators.stylegan2_files import read_restricted_pickle

    path = tmp_path / "array.pkl"
    path.write_bytes(pickle.dumps({"x": content(np)}, protocol=4))
    with pytest.raises(InputError, match=message):
        read_restricted_pickle(path)
    path.write_bytes(pickle.dumps({"x": np.arange(6, dtype=np.float32).reshape(2, 3)}, protocol=4))
    assert read_restricted_pickle(path)["x"].tolist() == [[0, 1, 2], [3, 4, 5]]


@pytest.mark.parametrize("name", ["stylegan3-t-tiny32.pkl", "stylegan3-r-tiny32.pkl"])
def test_a_stylegan3_pickle_with_numpy_state_is_read_for_what_it_is(name):
    from helpers import SHARED

    path = SHARED / "fixtures" / "stylegan3" / name
    if not path.is_file():
        pytest.skip("the StyleGAN3 fixtures live in ../shared/fixtures/stylegan3")
    assert load_generator_file(path).family == "stylegan3"


# -- every generator reader builds from checked sizes -------------------------------------------
def test_our_stylegan2_layout_is_rebuilt_from_its_shapes():
    from helpers import make_tiny_stylegan2
    from inversion.generators.stylegan2 import StyleGAN2Generator

    generator = make_tiny_stylegan2()
    state = generator.state_dict()
    rebuilt = StyleGAN2Generator.from_state_dict(state)
    assert rebuilt.config()["channels"] == generator.config()["channels"]
    z = torch.randn(2, 8)
    with torch.no_grad():  # conv_clamp cannot be read from weights; 256 never binds here
        torch.testing.assert_close(rebuilt(z), generator(z), rtol=0, atol=1e-6)
    state["synthesis.b8.conv1.weight"] = torch.zeros(1).expand(4096, 4096, 3, 3)
    with pytest.raises(InputError, match=r"synthesis\.b8\.conv1\.weight declares shape"):
        StyleGAN2Generator.from_state_dict(state)


@pytest.mark.parametrize("damage, message", [
    (lambda s: s.__setitem__("main.3.weight", torch.zeros(1).expand(8192, 8192, 4, 4)),
     r"main\.3\.weight declares shape \[8192, 8192, 4, 4\]"),
    (lambda s: s.__setitem__("main.3.weight", torch.zeros(8)), "must hold 4-d weights"),
    (lambda s: s.__setitem__("main.1.weight", [1.0]), r"main\.1\.weight is not a tensor"),
    (lambda s: s.__setitem__("main.0.weight", torch.zeros(8, 0, 4, 4)),
     "declares sizes no module can be built from|does not match the architecture"),
])
def test_malformed_dcgan_files_get_one_line(tmp_path, tiny_dcgan, damage, message):
    state = tiny_dcgan.state_dict()
    damage(state)
    path = tmp_path / "netG.pth"
    torch.save({"netG_state_dict": state}, path)
    with pytest.raises(InputError, match=message):
        load_generator_file(path)
