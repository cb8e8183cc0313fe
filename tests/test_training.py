"""The GAN and segmenter trainers on tiny settings: they learn, checkpoint and resume exactly."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from inversion.generators import load_generator_file
from mganprior.core.errors import InputError
from mganprior.core.pixels import from_uint8
from mganprior.training.gan import GANTrainConfig, ImageBank, PGGANDiscriminator, train_gan

CPU = torch.device("cpu")


def red_images(count: int = 32, size: int = 8) -> np.ndarray:
    images = np.zeros((count, size, size, 3), dtype=np.uint8)
    images[..., 0] = 230
    images[..., 1:] = 25
    return images


def tiny_config(**overrides) -> GANTrainConfig:
    settings = {"resolution": 8, "z_dim": 8, "channels": [16, 8], "iterations": 30, "batch": 8,
                "lr": 0.01, "ema_half_life_images": 50.0}
    return GANTrainConfig(**{**settings, **overrides})


def distance_to_red(generator: torch.nn.Module) -> float:
    with torch.no_grad():
        images = generator(torch.randn(64, generator.z_dim, generator=torch.Generator()
                                       .manual_seed(5)))
    target = torch.tensor([230, 25, 25]).view(1, 3, 1, 1) / 127.5 - 1
    return float((images - target).abs().mean())


def test_discriminator_shapes_and_minibatch_stddev():
    d = PGGANDiscriminator(16, [16, 12, 8])
    assert d(torch.randn(6, 3, 16, 16)).shape == (6,)
    with pytest.raises(InputError, match="needs 3 widths"):
        PGGANDiscriminator(16, [16, 8])


def test_gan_training_moves_samples_to_the_data(tmp_path):
    config = tiny_config(iterations=150)
    torch.manual_seed(config.seed)
    from inversion.generators import PGGANGenerator

    before = distance_to_red(PGGANGenerator(8, 8, [16, 8]).eval())
    result = train_gan(ImageBank(red_images(), CPU), config, tmp_path, device=CPU,
                       progress=False)
    after = distance_to_red(result.generator)
    assert after < 0.5 * before, (before, after)
    saved = load_generator_file(tmp_path / "generator.safetensors")
    assert distance_to_red(saved) == pytest.approx(after, abs=0.02)  # fp16 weights on disk
    summary = json.loads((tmp_path / "training.json").read_text())
    assert summary["steps"] == 150 and (tmp_path / "samples.png").is_file()


def test_interrupted_training_resumes_to_the_same_weights(tmp_path):
    bank = ImageBank(red_images(), CPU)
    config = tiny_config(iterations=24)
    straight = train_gan(bank, config, tmp_path / "straight", device=CPU, progress=False,
                         checkpoint_every=10)

    def interrupt(step, entry):
        raise KeyboardInterrupt

    config_logged = tiny_config(iterations=24)
    with pytest.raises(KeyboardInterrupt):
        # log entries come every 50 steps or at the end; checkpoints every 10
        train_gan(bank, tiny_config(iterations=17), tmp_path / "resumed", device=CPU,
                  progress=False, checkpoint_every=10, on_step=interrupt)
    state = torch.load(tmp_path / "resumed" / "checkpoint.pt", weights_only=True)
    assert state["step"] == 17  # Ctrl-C saved the step in flight, not the last periodic one
    assert (tmp_path / "resumed" / "generator.safetensors").is_file()
    resumed = train_gan(bank, config_logged, tmp_path / "resumed", device=CPU, progress=False,
                        checkpoint_every=10)
    assert resumed.steps == 24
    for (name, a), b in zip(straight.generator.state_dict().items(),
                            resumed.generator.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


def test_training_leaves_the_global_rng_alone(tmp_path):
    before = torch.get_rng_state()
    train_gan(ImageBank(red_images(), CPU), tiny_config(iterations=3), tmp_path / "a",
              device=CPU, progress=False)
    assert torch.equal(torch.get_rng_state(), before)
    torch.manual_seed(123)  # whatever the global RNG holds, the same settings train the same
    again = train_gan(ImageBank(red_images(), CPU), tiny_config(iterations=3), tmp_path / "b",
                      device=CPU, progress=False)
    first = load_generator_file(tmp_path / "a" / "generator.safetensors")
    for a, b in zip(first.state_dict().values(), again.generator.state_dict().values(),
                    strict=True):
        assert torch.equal(a.half().float(), b.half().float())


class Payload:
    """A pickled object whose unpickling would write a file (what a hostile checkpoint does)."""

    def __init__(self, target):
        self.target = str(target)

    def __reduce__(self):
        return (open, (self.target, "w"))


def test_a_checkpoint_that_would_run_code_is_refused_and_runs_nothing(tmp_path):
    bank = ImageBank(red_images(), CPU)
    out, marker = tmp_path / "run", tmp_path / "pwned"
    train_gan(bank, tiny_config(iterations=2), out, device=CPU, progress=False)
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    state["log"] = [Payload(marker)]
    torch.save(state, out / "checkpoint.pt")
    with pytest.raises(InputError, match="holds objects other than tensors"):
        train_gan(bank, tiny_config(iterations=4), out, device=CPU, progress=False)
    assert not marker.exists()


@pytest.mark.parametrize(("overrides", "field"), [
    ({"batch": 0}, "batch"), ({"iterations": -1}, "iterations"), ({"lr": float("nan")}, "lr"),
    ({"lr": float("inf")}, "lr"), ({"r1_every": 0}, "r1_every"), ({"channels": [16, 0]},
                                                                    "channels"),
])
def test_bad_training_settings_are_refused_before_anything_is_written(tmp_path, overrides,
                                                                      field):
    with pytest.raises(InputError, match=f"^{field} must") as err:
        train_gan(ImageBank(red_images(), CPU), tiny_config(**overrides), tmp_path / "out",
                  device=CPU, progress=False)
    assert err.value.field == field and not (tmp_path / "out").exists()
    with pytest.raises(InputError, match=r"^checkpoint_every must"):
        train_gan(ImageBank(red_images(), CPU), tiny_config(), tmp_path / "out", device=CPU,
                  progress=False, checkpoint_every=0)


def test_resume_with_other_settings_names_them(tmp_path):
    bank = ImageBank(red_images(), CPU)
    train_gan(bank, tiny_config(iterations=2), tmp_path, device=CPU, progress=False)
    with pytest.raises(InputError, match=r"other settings \(lr: "):
        train_gan(bank, tiny_config(iterations=4, lr=0.02), tmp_path, device=CPU,
                  progress=False)


def test_image_bank_refuses_bad_arrays_and_sizes(tmp_path):
    with pytest.raises(InputError, match=r"uint8 \[N, H, W, 3\]"):
        ImageBank(np.zeros((2, 8, 8), dtype=np.uint8), CPU)
    with pytest.raises(InputError, match="16x16 but the generator is 8x8"):
        train_gan(ImageBank(red_images(size=16), CPU), tiny_config(), tmp_path / "out",
                  device=CPU, progress=False)
    assert not (tmp_path / "out").exists()


# ----------------------------------------------------------------------------- segmenter


def stripes(count: int, size: int = 32, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Two-class images: left of a random column is dark blue (class 0), right is orange (1)."""
    rng = np.random.default_rng(seed)
    images = np.zeros((count, size, size, 3), dtype=np.uint8)
    labels = np.zeros((count, size, size), dtype=np.uint8)
    for i in range(count):
        split = rng.integers(4, size - 4)
        images[i, :, :split] = (20, 30, 120)
        images[i, :, split:] = (240, 150, 20)
        labels[i, :, split:] = 1
    return images, labels


@pytest.fixture(scope="module")
def trained_segmenter(tmp_path_factory):
    from mganprior.training.segmenter import LabelledBank, SegmenterTrainConfig, train_segmenter
    from segmentation.vocabularies import Vocabulary

    out = tmp_path_factory.mktemp("segmenter")
    vocabulary = Vocabulary("two", ("left", "right"), ((0, 0, 255), (255, 128, 0)))
    images, labels = stripes(64)
    held_images, held_labels = stripes(16, seed=1)
    config = SegmenterTrainConfig(encoder="resnet18", decoder_channels=(32, 16, 16, 8, 8),
                                  iterations=40, batch=8, lr=0.003)
    rng_before = torch.get_rng_state()
    result = train_segmenter(LabelledBank(images, labels, CPU), vocabulary, config, out,
                             device=CPU, validation=LabelledBank(held_images, held_labels, CPU),
                             progress=False)
    # the trainer used its own generators only: the process-global RNG is where it was
    assert torch.equal(torch.get_rng_state(), rng_before)
    return result, vocabulary, held_images, held_labels


def test_segmenter_training_learns_a_two_class_task(trained_segmenter):
    result, *_ = trained_segmenter
    assert result.validation.mean > 0.8, result.validation.as_dict()
    meta = json.loads((result.out_dir / "model" / "segmenter.json").read_text())
    assert meta["labels"] == ["left", "right"] and meta["validation"]["mean_iou"] > 0.8


def test_saved_segmenter_loads_with_smp_and_predicts_the_same(trained_segmenter):
    from segmentation.segmenters import load_smp_segmenter

    result, _, held_images, _ = trained_segmenter
    x = from_uint8(held_images)
    loaded = load_smp_segmenter(result.out_dir / "model", device="cpu")
    assert loaded.labels == ("left", "right")
    agree = (loaded.segment(x) == result.segmenter.segment(x)).float().mean()
    assert agree > 0.99  # fp16 weights on disk


def test_segmenter_resume_refuses_other_settings(trained_segmenter):
    from mganprior.training.segmenter import LabelledBank, SegmenterTrainConfig, train_segmenter

    result, vocabulary, *_ = trained_segmenter
    images, labels = stripes(8)
    config = SegmenterTrainConfig(encoder="resnet18", decoder_channels=(32, 16, 16, 8, 8),
                                  iterations=40, batch=8, lr=0.01)
    with pytest.raises(InputError, match=r"other settings \(lr: "):
        train_segmenter(LabelledBank(images, labels, CPU), vocabulary, config, result.out_dir,
                        device=CPU, progress=False)


def test_labels_beyond_the_vocabulary_are_refused(tmp_path):
    from mganprior.training.segmenter import LabelledBank, SegmenterTrainConfig, train_segmenter
    from segmentation.vocabularies import Vocabulary

    images, labels = stripes(4)
    labels[0, 0, 0] = 5
    with pytest.raises(InputError, match="class 5 but vocabulary one has only 2"):
        train_segmenter(LabelledBank(images, labels, CPU),
                        Vocabulary("one", ("a", "b"), ((0, 0, 0), (1, 1, 1))),
                        SegmenterTrainConfig(iterations=1), tmp_path, device=CPU,
                        progress=False)


def test_fine_tuning_starts_from_the_saved_model(trained_segmenter, tmp_path):
    from mganprior.training.segmenter import LabelledBank, SegmenterTrainConfig, train_segmenter

    result, vocabulary, held_images, held_labels = trained_segmenter
    images, labels = stripes(16, seed=2)
    config = SegmenterTrainConfig(encoder="resnet18", decoder_channels=(32, 16, 16, 8, 8),
                                  iterations=3, batch=8, lr=1e-5, dice_weight=1.0,
                                  init_from=str(result.out_dir / "model"))
    tuned = train_segmenter(LabelledBank(images, labels, CPU), vocabulary, config,
                            tmp_path / "tuned", device=CPU,
                            validation=LabelledBank(held_images, held_labels, CPU),
                            progress=False)
    # three tiny steps from the trained weights keep what was learnt; from scratch they could not
    assert tuned.validation.mean > 0.8
    other = SegmenterTrainConfig(encoder="resnet18", decoder_channels=(16, 16, 16, 8, 8),
                                 iterations=1, init_from=str(result.out_dir / "model"))
    with pytest.raises(InputError, match="does not match the architecture: shape mismatches"):
        train_segmenter(LabelledBank(images, labels, CPU), vocabulary, other,
                        tmp_path / "other", device=CPU, progress=False)
    assert not (tmp_path / "other").exists()


# ----------------------------------------------------------------------------- StyleGAN2


def tiny_stylegan2_config(**overrides):
    from mganprior.training.stylegan2 import StyleGAN2TrainConfig

    settings = {"resolution": 8, "z_dim": 8, "w_dim": 8, "mapping_layers": 2,
                "channels": [16, 8], "iterations": 30, "batch": 8, "lr": 0.01,
                "ema_half_life_images": 50.0, "r1_every": 4, "pl_weight": 1.0, "pl_every": 2}
    return StyleGAN2TrainConfig(**{**settings, **overrides})


def test_stylegan2_training_moves_samples_to_the_data(tmp_path):
    from inversion.generators.stylegan2 import StyleGAN2Generator

    config = tiny_stylegan2_config(iterations=120)
    with torch.random.fork_rng():
        torch.manual_seed(config.seed)
        before = distance_to_red(StyleGAN2Generator(8, 8, 8, [16, 8], 2).eval())
    result = train_gan(ImageBank(red_images(), CPU), config, tmp_path, device=CPU,
                       progress=False)
    after = distance_to_red(result.generator)
    assert after < 0.5 * before, (before, after)
    assert result.generator.mapping.w_avg.abs().sum() > 0  # w_avg followed the mapping
    saved = load_generator_file(tmp_path / "generator.safetensors")
    assert saved.family == "stylegan2"
    assert distance_to_red(saved) == pytest.approx(after, abs=0.02)


def test_interrupted_stylegan2_training_resumes_to_the_same_weights(tmp_path):
    bank = ImageBank(red_images(), CPU)
    straight = train_gan(bank, tiny_stylegan2_config(iterations=12), tmp_path / "straight",
                         device=CPU, progress=False, checkpoint_every=5)
    train_gan(bank, tiny_stylegan2_config(iterations=7), tmp_path / "resumed", device=CPU,
              progress=False, checkpoint_every=5)
    resumed = train_gan(bank, tiny_stylegan2_config(iterations=12), tmp_path / "resumed",
                        device=CPU, progress=False, checkpoint_every=5)
    for (name, a), b in zip(straight.generator.state_dict().items(),
                            resumed.generator.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


def test_training_records_give_their_config_back():
    from mganprior.training.gan import GANTrainConfig, train_config_from_dict

    for config in (GANTrainConfig(resolution=16, channels=[8, 8, 8]), tiny_stylegan2_config()):
        assert train_config_from_dict(config.to_dict()) == config
    legacy = {k: v for k, v in GANTrainConfig().to_dict().items() if k != "architecture"}
    assert train_config_from_dict(legacy) == GANTrainConfig()  # records before StyleGAN2
    with pytest.raises(InputError, match="unknown architecture 'vqgan'; known: pggan, stylegan2"):
        train_config_from_dict({"architecture": "vqgan"})
