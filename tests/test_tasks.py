"""Degradations and finishing steps against hand-computed values."""

import numpy as np
import pytest
import torch
from PIL import Image

from helpers import write_png
from inversion.tasks import (
    Colorization,
    Denoising,
    Inpainting,
    Inversion,
    SuperResolution,
    gray,
    make_task,
)
from mganprior.core.errors import InputError
from mganprior.core.pixels import from_uint8, to_uint8


def ctx_for(task, resolution=8, seeds=(1, 2)):
    return task.context(resolution, list(seeds), "cpu")


def test_gray_uses_bt601_weights():
    pixel = torch.tensor([1.0, -1.0, 0.0]).view(1, 3, 1, 1)
    torch.testing.assert_close(gray(pixel), torch.tensor(0.299 - 0.587).view(1, 1, 1, 1))
    task = Colorization()
    viewed = task.view(pixel.expand(2, 3, 2, 2), ctx_for(task))
    assert viewed.shape == (2, 3, 2, 2) and torch.all(viewed == viewed[:, :1])


def test_colorization_output_keeps_observed_luma_and_reconstructed_chroma_like_pil():
    rng = np.random.default_rng(0)
    truth = rng.integers(60, 196, size=(6, 6, 3), dtype=np.uint8)
    recon = rng.integers(60, 196, size=(6, 6, 3), dtype=np.uint8)
    task = Colorization()
    ctx = ctx_for(task, 6, [0])
    observation = task.observe(from_uint8(truth)[None], ctx)
    ours = to_uint8(task.finalize(from_uint8(recon)[None], observation, ctx))[0]
    # exact JPEG YCbCr in floats: Y from the truth, Cb/Cr from the reconstruction, back to RGB
    t, r = truth.astype(float), recon.astype(float)
    y = t @ [0.299, 0.587, 0.114]
    cb = 128 + r @ [-0.168736, -0.331264, 0.5]
    cr = 128 + r @ [0.5, -0.418688, -0.081312]
    exact = np.stack([y + 1.402 * (cr - 128), y - 0.344136 * (cb - 128) - 0.714136 * (cr - 128),
                      y + 1.772 * (cb - 128)], axis=-1)
    assert np.abs(ours - exact).max() <= 1.0
    # the official code does the same with PIL, which truncates in 8 bits at every step
    y8, _, _ = Image.fromarray(truth).convert("YCbCr").split()
    _, cb8, cr8 = Image.fromarray(recon).convert("YCbCr").split()
    official = np.asarray(Image.merge("YCbCr", (y8, cb8, cr8)).convert("RGB")).astype(int)
    assert np.abs(ours.astype(int) - official).max() <= 3
    torch.testing.assert_close(gray(from_uint8(ours)[None]), observation[:, :1], atol=0.02,
                               rtol=0)


def test_super_resolution_bilinear_matches_hand_values():
    image = torch.arange(16.0).view(1, 1, 4, 4).expand(1, 3, 4, 4) / 16
    task = SuperResolution(factor=2)
    down = task.view(image, ctx_for(task, 4))
    # factor 2: each output pixel is the mean of a 2x2 block
    expected = torch.tensor([[2.5, 4.5], [10.5, 12.5]]) / 16
    torch.testing.assert_close(down[0, 0], expected)
    big = torch.arange(64.0).view(1, 1, 8, 8).expand(1, 3, 8, 8)
    down4 = SuperResolution(factor=4).view(big, ctx_for(task))
    # factor 4 without antialias samples between pixels 4i+1 and 4i+2 (the official behaviour)
    torch.testing.assert_close(down4[0, 0], torch.tensor([[13.5, 17.5], [45.5, 49.5]]))
    smooth = SuperResolution(factor=4, antialias=True).view(big, ctx_for(task))
    assert smooth.shape == (1, 3, 2, 2) and not torch.allclose(smooth, down4)


def test_super_resolution_observed_images_are_taken_as_they_are():
    task = SuperResolution(factor=4)
    assert task.observation_size(64) == 16
    low = torch.rand(1, 3, 16, 16)
    assert task.accept(low, ctx_for(task)) is low
    with pytest.raises(InputError, match="does not divide"):
        SuperResolution(factor=3).observation_size(64)


def test_center_mask_has_a_centred_square_hole():
    mask = Inpainting(mask="center:0.5").mask_for(8, [0])
    assert mask.shape == (1, 1, 8, 8)
    hole = (mask[0, 0] == 0).nonzero()
    assert hole.min().item() == 2 and hole.max().item() == 5 and len(hole) == 16


def test_random_mask_removes_the_given_fraction_per_image_seed():
    task = Inpainting(mask="random:0.25")
    masks = task.mask_for(8, [1, 2, 1])
    assert masks.shape == (3, 1, 8, 8)
    assert [int((m == 0).sum()) for m in masks] == [16, 16, 16]
    assert torch.equal(masks[0], masks[2]) and not torch.equal(masks[0], masks[1])


def test_inpainting_view_keeps_known_pixels_only():
    task = Inpainting(mask="center:0.5")
    ctx = ctx_for(task)
    image = torch.ones(2, 3, 8, 8)
    viewed = task.view(image, ctx)
    assert viewed[0, :, 3, 3].eq(0).all() and viewed[0, :, 0, 0].eq(1).all()


def test_mask_files_white_is_known_and_can_be_inverted(tmp_path):
    array = np.full((8, 8), 255, np.uint8)
    array[:, :4] = 0  # left half black
    path = write_png(tmp_path / "mask.png", array)
    known = Inpainting(mask=str(path)).mask_for(8, [0])[0, 0]
    assert known[:, :4].eq(0).all() and known[:, 4:].eq(1).all()
    holes_white = Inpainting(mask=str(path), invert_mask=True).mask_for(8, [0])[0, 0]
    torch.testing.assert_close(holes_white, 1 - known)


def test_mask_of_the_wrong_size_is_an_error_unless_resized(tmp_path):
    path = write_png(tmp_path / "big.png", np.full((32, 32), 255, np.uint8))
    with pytest.raises(InputError, match=r"big.png is 32x32 but the generator makes 8x8"):
        Inpainting(mask=str(path)).mask_for(8, [0])
    assert Inpainting(mask=str(path), resize_mask=True).mask_for(8, [0]).shape == (1, 1, 8, 8)


@pytest.mark.parametrize("spec", ["center:1.5", "random:x", "missing.png"])
def test_bad_mask_specs_fail_clearly(spec):
    with pytest.raises(InputError, match=r"^mask "):
        Inpainting(mask=spec)


def test_denoising_adds_seeded_gaussian_noise_in_pixel_units():
    task = Denoising(sigma=25)
    ctx = task.context(64, [5, 6], "cpu")
    clean = torch.zeros(2, 3, 64, 64)
    noisy = task.observe(clean, ctx)
    assert noisy.std().item() == pytest.approx(25 / 127.5, rel=0.05)
    torch.testing.assert_close(noisy, task.observe(clean, task.context(64, [5, 6], "cpu")))
    assert not torch.equal(noisy[0], noisy[1])
    assert torch.equal(task.view(noisy, ctx), noisy)
    with pytest.raises(InputError, match="sigma"):
        Denoising(sigma=-1)


def test_tasks_by_name():
    assert isinstance(make_task("inversion"), Inversion)
    assert make_task("super-resolution", factor=8, mask="ignored").factor == 8
    with pytest.raises(InputError, match="tasks: inversion, colorization"):
        make_task("deblurring")
