"""Fuzzing the readers with hypothesis: a valid file with its fields or bytes mutated either
loads or is refused with one ``InputError``; nothing else escapes.

The suite runs in a subprocess under a memory ceiling (``RLIMIT_AS`` 3 GiB, so a reader that
allocates from a declared size fails the run) and a time ceiling; in the test process itself the
format tests are skipped. A fixed, derandomised number of examples runs in ``make test``;
``make fuzz`` (the ``fuzz`` profile, ``HYPOTHESIS_PROFILE=fuzz``) runs many more. Formats: our
safetensors and config, StyleGAN (v1), PGGAN and rosinality checkpoints (fields, and the bytes
of a torch file), NVIDIA StyleGAN2 pickle settings and StyleGAN3 layer settings, boundary ``.npy``
files and their sidecars, transformers configs and preprocessor configs, CSAIL YAML configs and
checkpoints, run records and results lines.
"""

from __future__ import annotations

import io
import json
import os

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from helpers import (
    copy_with_json,
    make_tiny_pggan,
    make_tiny_stylegan1,
    make_tiny_stylegan2,
    nvidia_pickle,
)
from mganprior.core.errors import InputError

settings.register_profile("ci", max_examples=25, deadline=None, derandomize=True,
                          suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                 HealthCheck.too_slow])
settings.register_profile("fuzz", max_examples=500, deadline=None,
                          suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                 HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

INNER = "MGANPRIOR_FUZZ_INNER"  # set in the subprocess that runs the format tests
MEMORY_CEILING = 3 << 30
inner_only = pytest.mark.skipif(os.environ.get(INNER) != "1", reason="runs in the subprocess of "
                                "test_the_readers_under_a_memory_and_time_ceiling")


def test_the_readers_under_a_memory_and_time_ceiling():
    """Every format test below, in a subprocess limited to 3 GiB of address space and 10 min."""
    import resource
    import subprocess
    import sys

    if os.environ.get(INNER) == "1":
        pytest.skip("this is the limited run itself")

    def ceiling() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (MEMORY_CEILING, MEMORY_CEILING))

    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           __file__], env={**os.environ, INNER: "1"}, preexec_fn=ceiling,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert " passed" in done.stdout and " failed" not in done.stdout

# values a hostile or careless file puts where a number, a list or a mapping belongs
JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers(-10 ** 12, 10 ** 12) | st.text(max_size=6)
    | st.sampled_from([float("nan"), float("inf"), -1.0, 0.0, 1e300, 0.5]),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner,
                                                                  max_size=3),
    max_leaves=6)


def loads_or_refuses(load) -> None:
    try:
        load()
    except InputError as err:
        assert "\n" not in str(err), str(err)


# -- StyleGAN (v1) checkpoints -------------------------------------------------------------------
STYLEGAN1 = make_tiny_stylegan1().state_dict()
SHAPES = st.lists(st.sampled_from([0, 1, 2, 3, 4, 8, 9]), min_size=0, max_size=4)


@st.composite
def damaged_state(draw, base: dict | None = None) -> dict:
    """A state dict with one to three keys dropped, reshaped, replaced by a plain value,
    inflated as a stride-0 view, filled with NaN, or added."""
    base = STYLEGAN1 if base is None else base
    state = dict(base)
    for _ in range(draw(st.integers(1, 3))):
        key = draw(st.sampled_from(sorted(state) or ["synthesis.lod"]))
        change = draw(st.sampled_from(["drop", "shape", "value", "inflate", "nan", "extra"]))
        if change == "drop":
            state.pop(key, None)
        elif change == "shape":
            state[key] = torch.zeros(draw(SHAPES))
        elif change == "value":
            state[key] = draw(JSONISH)
        elif change == "inflate":  # a stride-0 view: many numbers declared over one
            state[key] = torch.zeros(1).expand(*[draw(st.integers(1, 10 ** 6))
                                                 for _ in range(draw(st.integers(1, 3)))])
        elif change == "nan":
            state[key] = torch.full(tuple(base.get(key, torch.zeros(1)).shape), float("nan"))
        else:
            state[f"synthesis.layer{draw(st.integers(0, 40))}.epilogue.bias"] = torch.zeros(
                draw(st.integers(1, 16)))
    return state


@inner_only
@given(damaged_state())
def test_stylegan1_checkpoints(tmp_path, state):
    from inversion.generators.formats import load_generator_file

    path = tmp_path / "fuzzed.pth"
    torch.save(state, path)
    loads_or_refuses(lambda: load_generator_file(path))


@inner_only
@given(st.integers(0, 4000), st.lists(st.tuples(st.integers(0, 10 ** 6), st.integers(0, 255)),
                                      max_size=6))
def test_checkpoint_bytes(tmp_path, cut, flips):
    """A torch checkpoint truncated or with bytes flipped (its zip directory and the pickle
    inside)."""
    from inversion.generators.formats import load_generator_file

    buffer = io.BytesIO()
    torch.save(STYLEGAN1, buffer)
    content = bytearray(buffer.getvalue())
    content = content[:len(content) - cut] if cut else content
    for position, value in flips:
        if content:
            content[position % len(content)] = value
    path = tmp_path / "fuzzed.pth"
    path.write_bytes(bytes(content))
    loads_or_refuses(lambda: load_generator_file(path))


PGGAN = make_tiny_pggan().state_dict()


@inner_only
@given(damaged_state(PGGAN))
def test_pggan_checkpoints(tmp_path, state):
    from inversion.generators.formats import load_generator_file

    path = tmp_path / "fuzzed.pth"
    torch.save(state, path)
    loads_or_refuses(lambda: load_generator_file(path))


@pytest.fixture(scope="module")
def ours(tmp_path_factory):
    from inversion.generators.saving import save_generator

    return save_generator(make_tiny_stylegan1(), tmp_path_factory.mktemp("ours") / "g.safetensors")


CONFIG_FIELDS = ("family", "resolution", "z_dim", "w_dim", "channels", "mapping_layers",
                 "mapping_width", "fused", "truncation_psi", "truncation_layers")


@inner_only
@given(st.dictionaries(st.sampled_from(CONFIG_FIELDS), JSONISH, min_size=1, max_size=3))
def test_our_safetensors_configs(tmp_path, ours, fields):
    import shutil

    from inversion.generators.formats import load_generator_file
    from mganprior.core.weights import config_path

    path = tmp_path / "g.safetensors"
    shutil.copy(ours, path)
    config = json.loads(config_path(ours).read_text()) | fields
    config_path(path).write_text(json.dumps(config))
    loads_or_refuses(lambda: load_generator_file(path))


@pytest.fixture(scope="module")
def rosinality():
    from helpers import SHARED

    fixture = SHARED / "fixtures" / "stylegan2" / "rosinality-tiny32.pt"
    if not fixture.is_file():
        pytest.skip("the rosinality fixture lives in ../shared/fixtures/stylegan2")
    return torch.load(fixture, weights_only=True)


@inner_only
@settings(max_examples=15)
@given(st.data())
def test_rosinality_checkpoints(tmp_path, rosinality, data):
    from inversion.generators.formats import load_generator_file

    content = dict(rosinality)
    content["g_ema"] = data.draw(damaged_state(rosinality["g_ema"]))
    content["args"] = data.draw(st.one_of(st.just(rosinality.get("args")), JSONISH))
    content["latent_avg"] = data.draw(st.one_of(st.just(rosinality.get("latent_avg")), JSONISH))
    path = tmp_path / "fuzzed.pt"
    torch.save(content, path)
    loads_or_refuses(lambda: load_generator_file(path))


# -- NVIDIA StyleGAN2 pickles --------------------------------------------------------------------
TOP_FIELDS = ("z_dim", "w_dim", "c_dim", "img_resolution", "img_channels", "_init_kwargs")


@inner_only
@given(st.dictionaries(st.sampled_from(TOP_FIELDS), JSONISH, min_size=1, max_size=3))
def test_nvidia_pickle_settings(tmp_path, top):
    from inversion.generators.formats import load_generator_file

    path = nvidia_pickle(make_tiny_stylegan2(), tmp_path / "fuzzed.pkl", top=top)
    loads_or_refuses(lambda: load_generator_file(path))


# -- NVIDIA StyleGAN3 pickles: a layer's declared sizes, factors, taps and padding ----------------
LAYER_FIELDS = ("in_channels", "out_channels", "in_size", "out_size", "conv_kernel", "up_factor",
                "down_factor", "up_taps", "down_taps", "down_radial", "is_torgb", "padding",
                "conv_clamp")
SIZES = st.integers(-3, 10 ** 7).map(lambda n: np.array([n, n])) | JSONISH


@inner_only
@given(st.sampled_from(["L0_24_8", "L2_24_8", "L4_16_3"]),
       st.dictionaries(st.sampled_from(LAYER_FIELDS), SIZES, min_size=1, max_size=3))
def test_nvidia_stylegan3_layer_settings(tmp_path, layer, fields):
    from helpers import make_tiny_stylegan3, nvidia_stylegan3_pickle
    from inversion.generators.formats import load_generator_file

    def edit(synthesis):
        synthesis["_modules"][layer].meta["state"].update(fields)

    path = nvidia_stylegan3_pickle(make_tiny_stylegan3(), tmp_path / "fuzzed.pkl", edit=edit)
    loads_or_refuses(lambda: load_generator_file(path))


# -- boundary files ------------------------------------------------------------------------------
def npy_bytes() -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.linspace(-1, 1, 8).reshape(1, 8))
    return buffer.getvalue()


@inner_only
@example(0, [], None)  # an empty file
@example(len(npy_bytes()), [], [1, 2])  # a list as the sidecar
@example(len(npy_bytes()), [], {"space": 5})
@given(st.integers(0, len(npy_bytes())), st.lists(st.tuples(st.integers(0, 255),
                                                           st.integers(0, 255)), max_size=4),
       st.one_of(st.none(), JSONISH))
def test_boundary_files(tmp_path, tiny_pggan, cut, flips, sidecar):
    from analysis.directions import load_boundary

    content = bytearray(npy_bytes()[:cut])
    for position, value in flips:
        if content:
            content[position % len(content)] = value
    path = tmp_path / "fuzzed.npy"
    path.write_bytes(bytes(content))
    if sidecar is not None:
        path.with_suffix(".json").write_text(json.dumps(sidecar))
    loads_or_refuses(lambda: load_boundary(path, tiny_pggan))


# -- transformers preprocessor configs ----------------------------------------------------------
PREPROCESSOR_FIELDS = ("size", "rescale_factor", "image_mean", "image_std", "do_normalize",
                       "do_rescale", "do_resize")


@pytest.fixture(scope="module")
def segformer_folder(tmp_path_factory):
    pytest.importorskip("transformers", reason="the hf extra is not installed")
    from helpers import tiny_hf_folder

    return tiny_hf_folder("segformer", 16, tmp_path_factory.mktemp("seg") / "model")


@inner_only
@settings(max_examples=15)
@example({"size": {"height": "x", "width": 8}})
@example({"image_std": [0, 0, 0]})
@example({"size": {"height": 60000, "width": 60000}})
@example({"size": None})  # accepted at load time, refused by transformers for every image
@given(st.dictionaries(st.sampled_from(PREPROCESSOR_FIELDS), JSONISH, min_size=1, max_size=3))
def test_transformers_preprocessor_configs(tmp_path, segformer_folder, fields):
    from segmentation.formats import load_segmenter_dir

    folder = copy_with_json(segformer_folder, tmp_path / "model", "preprocessor_config.json",
                            fields)

    def load_and_segment():
        labels = load_segmenter_dir(folder, device="cpu").segment(torch.zeros(1, 3, 8, 8))
        assert labels.shape == (1, 8, 8)

    loads_or_refuses(load_and_segment)


CONFIG_JSON_FIELDS = ("id2label", "label2id", "num_labels", "model_type", "hidden_sizes",
                      "num_encoder_blocks")


@inner_only
@settings(max_examples=15)
@given(st.dictionaries(st.sampled_from(CONFIG_JSON_FIELDS), JSONISH, min_size=1, max_size=2))
def test_transformers_configs(tmp_path, segformer_folder, fields):
    from segmentation.formats import load_segmenter_dir

    folder = copy_with_json(segformer_folder, tmp_path / "model", "config.json", fields)
    loads_or_refuses(lambda: load_segmenter_dir(folder, device="cpu"))


# -- CSAIL YAML configs -------------------------------------------------------------------------
CSAIL_FIELDS = ("arch_encoder", "arch_decoder", "fc_dim", "num_class", "imgSizes", "imgMaxSize",
                "padding_constant")


@inner_only
@example({"num_class": -1})
@example({"fc_dim": 10 ** 9})
@given(st.dictionaries(st.sampled_from(CSAIL_FIELDS), JSONISH, min_size=1, max_size=3))
def test_csail_configs(tmp_path, fields):
    pytest.importorskip("yaml")
    import yaml

    from segmentation.csail import read_architecture

    model = {"arch_encoder": "mobilenetv2dilated", "arch_decoder": "c1", "fc_dim": 320}
    dataset = {"num_class": 150}
    for key, value in fields.items():
        (model if key in ("arch_encoder", "arch_decoder", "fc_dim") else dataset)[key] = value
    folder = tmp_path / "csail"
    folder.mkdir(exist_ok=True)
    (folder / "config.yaml").write_text(yaml.safe_dump({"MODEL": model, "DATASET": dataset}))
    loads_or_refuses(lambda: read_architecture(folder))


@pytest.fixture(scope="module")
def csail_pair():
    pytest.importorskip("mit_semseg", reason="the csail extra (mit-semseg) is not installed")
    from segmentation.csail import build

    encoder, decoder = build({"arch_encoder": "mobilenetv2dilated", "arch_decoder": "c1",
                              "fc_dim": 320, "num_class": 150})
    return encoder.state_dict(), decoder.state_dict()


@inner_only
@settings(max_examples=15)
@given(st.data())
def test_csail_checkpoints(tmp_path, csail_pair, data):
    from segmentation.formats import load_segmenter_dir

    folder = tmp_path / "ade20k-mobilenetv2dilated-c1"
    folder.mkdir(exist_ok=True)
    encoder, decoder = csail_pair
    which = data.draw(st.sampled_from(["encoder", "decoder"]))
    damaged = data.draw(damaged_state(encoder if which == "encoder" else decoder))
    torch.save(damaged if which == "encoder" else encoder, folder / "encoder_epoch_20.pth")
    torch.save(damaged if which == "decoder" else decoder, folder / "decoder_epoch_20.pth")
    loads_or_refuses(lambda: load_segmenter_dir(folder, device="cpu"))


# -- run records and results lines -----------------------------------------------------------------
@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    from helpers import rendered_targets
    from inversion.engine import QUIET, invert
    from inversion.recipes import get_recipe
    from inversion.rundir import ImageRecord, RunDirectory
    from inversion.tasks import Inversion

    generator = make_tiny_pggan()
    result = invert(generator, rendered_targets(generator), Inversion(),
                    get_recipe("adam", "inversion").with_overrides(iterations=2, codes=2),
                    seeds=[0, 1], names=["a", "b"], options=QUIET)
    run = RunDirectory.open(tmp_path_factory.mktemp("run") / "run",
                            {"recipe": result.recipe, "task": result.task})
    run.write_batch(result, [ImageRecord(name, [], None, None) for name in ("a", "b")])
    run.rebuild_index()
    return run.path


@inner_only
@given(st.dictionaries(st.sampled_from(["image", "status", "seed", "psnr", "layer", "source"]),
                       JSONISH, min_size=1, max_size=3),
       st.binary(max_size=64))
def test_run_records_and_results_lines(tmp_path, finished_run, fields, line):
    import shutil

    from inversion.rundir import RunDirectory

    path = tmp_path / "run"
    shutil.rmtree(path, ignore_errors=True)
    shutil.copytree(finished_run, path)
    record = path / "images" / "a" / "record.json"
    record.write_text(json.dumps(json.loads(record.read_text()) | fields))
    with open(path / "results.jsonl", "ab") as handle:
        handle.write(line)
    run = RunDirectory(path)
    problems: list[str] = []
    loads_or_refuses(lambda: run.records(problems))
    loads_or_refuses(lambda: run.rebuild_index(problems=problems))
    loads_or_refuses(run.load_result)
