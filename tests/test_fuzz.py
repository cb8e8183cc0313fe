"""Fuzzing the readers with hypothesis: a valid file with its fields or bytes mutated either
loads or is refused with one ``InputError``; nothing else escapes.

A fixed, derandomised number of examples runs in ``make test``; ``make fuzz`` (the ``fuzz``
profile, ``HYPOTHESIS_PROFILE=fuzz``) runs many more. Formats covered here: StyleGAN (v1)
checkpoints, NVIDIA StyleGAN2 pickle settings, boundary ``.npy`` files and their sidecars,
transformers preprocessor configs, CSAIL YAML configs.
"""

from __future__ import annotations

import io
import json
import os

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.errors import InputError
from helpers import make_tiny_stylegan1, make_tiny_stylegan2, nvidia_pickle

settings.register_profile("ci", max_examples=25, deadline=None, derandomize=True,
                          suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                 HealthCheck.too_slow])
settings.register_profile("fuzz", max_examples=500, deadline=None,
                          suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                 HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

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
def damaged_state(draw) -> dict:
    state = dict(STYLEGAN1)
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
            state[key] = torch.full_like(STYLEGAN1.get(key, torch.zeros(1)), float("nan"))
        else:
            state[f"synthesis.layer{draw(st.integers(0, 40))}.epilogue.bias"] = torch.zeros(
                draw(st.integers(1, 16)))
    return state


@given(damaged_state())
def test_stylegan1_checkpoints(tmp_path, state):
    from inversion.generators.formats import load_generator_file

    path = tmp_path / "fuzzed.pth"
    torch.save(state, path)
    loads_or_refuses(lambda: load_generator_file(path))


# -- NVIDIA StyleGAN2 pickles --------------------------------------------------------------------
TOP_FIELDS = ("z_dim", "w_dim", "c_dim", "img_resolution", "img_channels", "_init_kwargs")


@given(st.dictionaries(st.sampled_from(TOP_FIELDS), JSONISH, min_size=1, max_size=3))
def test_nvidia_pickle_settings(tmp_path, top):
    from inversion.generators.formats import load_generator_file

    path = nvidia_pickle(make_tiny_stylegan2(), tmp_path / "fuzzed.pkl", top=top)
    loads_or_refuses(lambda: load_generator_file(path))


# -- boundary files ------------------------------------------------------------------------------
def npy_bytes() -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.linspace(-1, 1, 8).reshape(1, 8))
    return buffer.getvalue()


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


@settings(max_examples=15)
@given(st.dictionaries(st.sampled_from(PREPROCESSOR_FIELDS), JSONISH, min_size=1, max_size=3))
def test_transformers_preprocessor_configs(tmp_path, segformer_folder, fields):
    import shutil

    from segmentation.formats import load_segmenter_dir

    folder = tmp_path / "model"
    shutil.rmtree(folder, ignore_errors=True)
    shutil.copytree(segformer_folder, folder)
    config = json.loads((folder / "preprocessor_config.json").read_text()) | fields
    (folder / "preprocessor_config.json").write_text(json.dumps(config))

    def load_and_segment():
        segmenter = load_segmenter_dir(folder, device="cpu")
        try:
            labels = segmenter.segment(torch.zeros(1, 3, 8, 8))
        except (ValueError, TypeError, RuntimeError, ZeroDivisionError):
            return  # a config the checks let through and the library rejects at run time
        assert labels.shape == (1, 8, 8)

    loads_or_refuses(load_and_segment)


# -- CSAIL YAML configs -------------------------------------------------------------------------
CSAIL_FIELDS = ("arch_encoder", "arch_decoder", "fc_dim", "num_class", "imgSizes", "imgMaxSize",
                "padding_constant")


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
