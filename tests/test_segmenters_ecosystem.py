"""The segmenters users already have: Hugging Face transformers folders and hub cache entries,
CSAIL encoder/decoder pairs, ADE20K-150 by index; tiny random-weight models, no network."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import tiny_hf_folder
from mganprior.core.errors import InputError
from segmentation.formats import load_segmenter_dir
from segmentation.vocabularies import ADE20K_150

transformers = pytest.importorskip("transformers", reason="the hf extra is not installed")
LABELS = dict(enumerate(ADE20K_150.names))


@pytest.fixture(scope="module")
def segformer(tmp_path_factory) -> Path:
    return tiny_hf_folder("segformer", 48, tmp_path_factory.mktemp("segformer") / "model")


def test_a_segformer_folder_loads_offline_and_segments_batches(segformer):
    segmenter = load_segmenter_dir(segformer, device="cpu")
    assert segmenter.vocabulary.name == "ade20k-150" and segmenter.labels[0] == "wall"
    images = torch.rand(3, 3, 32, 32) * 2 - 1
    maps = segmenter.segment(images)
    assert maps.shape == (3, 32, 32) and maps.dtype == torch.int64
    one_by_one = torch.cat([segmenter.segment(images[i:i + 1]) for i in range(3)])
    assert torch.equal(maps, one_by_one)


# -- equal to transformers' own pipeline ----------------------------------------------------------
def pipeline_maps(folder: Path, pixels: np.ndarray) -> torch.Tensor:
    """Label maps from transformers' ``image-segmentation`` pipeline (semantic subtask), one PIL
    image at a time, as a user of the library would call it."""
    from PIL import Image

    pipe = transformers.pipeline("image-segmentation", model=str(folder), device="cpu")
    ids = {name: int(k) for k, name in pipe.model.config.id2label.items()}
    maps = torch.full((len(pixels), *pixels.shape[1:3]), -1, dtype=torch.long)
    for b, image in enumerate(pixels):
        for segment in pipe(Image.fromarray(image), subtask="semantic"):
            maps[b][torch.from_numpy(np.array(segment["mask"]) == 255)] = ids[segment["label"]]
    assert maps.min() >= 0
    return maps


@pytest.mark.parametrize("kind", ["segformer", "upernet", "mask2former", "oneformer"])
def test_label_maps_equal_the_transformers_pipeline(kind, tmp_path):
    from mganprior.core.pixels import from_uint8

    rng = np.random.default_rng(0)
    for side in (48, 64):  # two processor sizes
        folder = tiny_hf_folder(kind, side, tmp_path / f"{kind}-{side}")
        segmenter = load_segmenter_dir(folder, device="cpu")
        for height, width in ((40, 52), (64, 64)):  # two image sizes
            pixels = rng.integers(0, 256, (3, height, width, 3), dtype=np.uint8)
            ours = segmenter.segment(from_uint8(pixels))
            reference = pipeline_maps(folder, pixels)
            assert (ours == reference).float().mean() == 1.0, (kind, side, height, width)
            assert reference.unique().numel() > 1  # a map that says something


def test_a_oneformer_folder_without_its_tokenizer_gets_one_line(tmp_path):
    folder = tiny_hf_folder("oneformer", 48, tmp_path / "oneformer")
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (folder / name).unlink()
    with pytest.raises(InputError, match=r"OneFormer folder without its task tokenizer .*"
                                         r"tokenizer\.json.*save_pretrained"):
        load_segmenter_dir(folder)


def test_hub_names_with_spaces_match_classes(tmp_path):
    spaced = {k: (f"{v} " if k % 2 else v) for k, v in LABELS.items()}  # "bed " as on the hub
    segmenter = load_segmenter_dir(tiny_hf_folder("segformer", 48, tmp_path / "s", spaced))
    assert segmenter.vocabulary.name == "ade20k-150"
    assert segmenter.vocabulary.index("bed") == 7 == segmenter.vocabulary.index(" Bed ")
    clash = dict(LABELS) | {12: "Bed "}
    with pytest.raises(InputError, match=r"config\.json: id2label: .*repeats class 'Bed' "
                                         r"\(ids 7 and 12"):
        load_segmenter_dir(tiny_hf_folder("segformer", 48, tmp_path / "c", clash))


def test_a_hub_repo_id_is_read_from_the_cache_only(segformer, tmp_path, monkeypatch):
    import shutil

    cache = tmp_path / "hub"
    snapshot = cache / "models--org--tiny-seg" / "snapshots" / "abc123"
    shutil.copytree(segformer, snapshot)
    (cache / "models--org--tiny-seg" / "refs").mkdir()
    (cache / "models--org--tiny-seg" / "refs" / "main").write_text("abc123")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(cache))
    assert load_segmenter_dir("org/tiny-seg", device="cpu").labels[2] == "sky"
    with pytest.raises(InputError, match=r"org/absent is not in the Hugging Face cache.*"
                                         r"huggingface-cli download org/absent"):
        load_segmenter_dir("org/absent")


def test_bad_hf_folders_get_one_line(segformer, tmp_path):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(segformer, broken)
    (broken / "preprocessor_config.json").unlink()
    with pytest.raises(InputError, match=r"lacks preprocessor_config\.json"):
        load_segmenter_dir(broken)
    with pytest.raises(InputError, match=r"labels name 3 classes but .* predicts 150"):
        load_segmenter_dir(segformer, labels=["a", "b", "c"])
    config = json.loads((segformer / "config.json").read_text())
    config["hidden_sizes"] = [8, 32]
    wrong = tmp_path / "wrong"
    shutil.copytree(segformer, wrong)
    (wrong / "config.json").write_text(json.dumps(config))
    with pytest.raises(InputError, match="holds no weights transformers can load"):
        load_segmenter_dir(wrong)


def test_attribute_a_run_with_a_tiny_segformer(tmp_path, capsys, segformer, face_pngs,
                                               tiny_pggan):
    from analysis.attribution_files import AttributionDirectory
    from inversion.generators import save_generator
    from mganprior.cli import main

    checkpoint = str(save_generator(tiny_pggan, tmp_path / "tiny.safetensors"))
    run = tmp_path / "run"
    assert main(["invert", "--checkpoint", checkpoint, "--images", str(face_pngs), "--out",
                 str(run), "--iterations", "2", "--codes", "4", "--quiet"]) == 0
    assert main(["attribute", str(run), "--segmenter-dir", str(segformer), "--quiet"]) == 0
    attribution = AttributionDirectory(run / "attribution")
    assert attribution.vocabulary().name == "ade20k-150"
    assert main(["report", str(run), "--out", str(tmp_path / "r.html")]) == 0
    assert "Attribution: codes per class" in (tmp_path / "r.html").read_text()


def test_hub_names_with_spaces_drive_directions_and_edits(tmp_path, capsys, tiny_pggan,
                                                          face_pngs):
    from inversion.generators import save_generator
    from mganprior.cli import main

    folder = tiny_hf_folder("segformer", 48, tmp_path / "spaced", {0: "wall ", 1: "bed "})
    checkpoint = str(save_generator(tiny_pggan, tmp_path / "tiny.safetensors"))
    assert main(["directions", "interfacegan", "--checkpoint", checkpoint, "--attribute",
                 "class:bed", "--segmenter-dir", str(folder), "--samples", "200",
                 "--fraction", "0.1", "--out", str(tmp_path / "dirs")]) == 0
    assert "class_bed.npy (interfacegan" in capsys.readouterr().out
    run = tmp_path / "run"
    assert main(["invert", "--checkpoint", checkpoint, "--images", str(face_pngs), "--out",
                 str(run), "--iterations", "2", "--codes", "2", "--quiet"]) == 0
    assert main(["edit", str(run), "--direction", str(tmp_path / "dirs" / "class_bed.npy"),
                 "--segmenter-dir", str(folder), "--target", "bed", "--steps", "3",
                 "--start", "-1", "--end", "2", "--quiet"]) == 0
    from analysis.edit_files import EditDirectory

    meta = EditDirectory(run / "edits" / "class_bed").meta()
    assert meta["target"] == "bed" and meta["settings"]["start"] == -1.0
