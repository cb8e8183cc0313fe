"""Reading user images: every conversion is made and noted; bad files fail with their name."""

import numpy as np
import pytest
from PIL import Image

from helpers import write_png
from inversion.images import expand_image_paths, load_image, load_images, unique_names
from mganprior.core.errors import InputError


def rgb(size=(8, 8), value=(200, 100, 50)):
    return np.broadcast_to(np.array(value, np.uint8), (*size, 3)).copy()


def test_rgb_at_the_right_size_loads_without_notes(tmp_path):
    image = load_image(write_png(tmp_path / "a.png", rgb()), 8)
    assert image.notes == [] and image.pixels.shape == (8, 8, 3)
    assert tuple(image.pixels[0, 0]) == (200, 100, 50)
    tensor = image.tensor()
    assert tensor.shape == (3, 8, 8) and tensor.min() >= -1 and tensor.max() <= 1


def test_gray_is_converted_with_a_note(tmp_path):
    image = load_image(write_png(tmp_path / "g.png", np.full((8, 8), 77, np.uint8)), 8)
    assert image.notes == ["grayscale image converted to RGB"]
    assert (image.pixels == 77).all()


def test_rgba_drops_alpha_with_a_note(tmp_path):
    array = np.zeros((8, 8, 4), np.uint8)
    array[..., 0], array[..., 3] = 255, 10
    image = load_image(write_png(tmp_path / "t.png", array), 8)
    assert image.notes == ["RGBA image: alpha channel dropped"]
    assert tuple(image.pixels[0, 0]) == (255, 0, 0)


def test_16_bit_gray_is_scaled_to_8_bits(tmp_path):
    array = np.full((8, 8), 65535 // 2, np.uint16)
    path = tmp_path / "deep.png"
    Image.fromarray(array).save(path)
    image = load_image(path, 8)
    assert "16-bit" in image.notes[0]
    assert abs(int(image.pixels[0, 0, 0]) - 127) <= 1


def test_wrong_size_and_non_square_images_are_cropped_and_resized_with_notes(tmp_path):
    array = rgb((20, 40))
    array[:, :10] = 0  # the left strip is cropped away
    image = load_image(write_png(tmp_path / "wide.png", array), 8)
    assert image.notes == ["centre-cropped from 40x20 to 20x20", "resized from 20x20 to 8x8"]
    assert image.pixels.shape == (8, 8, 3) and image.pixels.min() > 0


def test_missing_and_corrupt_files_name_the_file(tmp_path):
    with pytest.raises(InputError, match=r"nope\.png does not exist"):
        load_image(tmp_path / "nope.png", 8)
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(InputError, match=r"bad\.png is corrupt or not an image"):
        load_image(bad, 8)
    truncated = tmp_path / "cut.png"
    write_png(tmp_path / "full.png", np.random.default_rng(0).integers(0, 255, (64, 64, 3),
                                                                      dtype=np.uint8))
    truncated.write_bytes((tmp_path / "full.png").read_bytes()[:500])
    with pytest.raises(InputError, match=r"cut\.png is corrupt"):
        load_image(truncated, 8)


def test_folders_expand_to_sorted_images_and_names_stay_unique(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    write_png(tmp_path / "a" / "face one.png", rgb())
    write_png(tmp_path / "a" / "z.jpg", rgb())
    (tmp_path / "a" / "notes.txt").write_text("not an image")
    write_png(tmp_path / "b" / "face one.png", rgb())
    files = expand_image_paths([tmp_path / "a", tmp_path / "b" / "face one.png"])
    assert [f.name for f in files] == ["face one.png", "z.jpg", "face one.png"]
    assert unique_names(files) == ["face_one", "z", "face_one-2"]
    assert [image.name for image in load_images([tmp_path / "a"], 8)] == ["face_one", "z"]


def test_empty_folders_and_no_images_are_errors(tmp_path):
    with pytest.raises(InputError, match="holds no images"):
        expand_image_paths([tmp_path])
    with pytest.raises(InputError, match="no images given"):
        expand_image_paths([])
