"""Shared test helpers: tiny generators with hand-set weights, hand-made test families, and the
contract every generator family must satisfy (:class:`GeneratorContract`).

Tests import from here, never from each other.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from inversion.composition import initial_alphas, render
from inversion.engine import QUIET, InversionResult, invert
from inversion.generators import CarrySpec, DCGANGenerator, PGGANGenerator, StagedGenerator
from inversion.generators.formats import load_generator_file
from inversion.generators.saving import save_generator
from inversion.generators.stylegan1 import StyleGAN1Generator
from inversion.generators.stylegan2 import StyleGAN2Generator, fir_filter
from inversion.generators.stylegan3 import StyleGAN3Generator
from inversion.options import TuneSettings
from inversion.recipes import get_recipe
from inversion.rundir import ImageRecord, RunDirectory
from inversion.tasks import Inversion
from mganprior.core.errors import InputError
from mganprior.core.weights import load_strict
from segmentation.vocabularies import ADE20K_150, Vocabulary, spread_colors

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
REAL_IMAGES = SHARED / "real-images"


def needs_shared(folder: str, what: str):
    """A skip mark for tests that read ``../shared/fixtures/FOLDER`` (a user's clone has none)."""
    return pytest.mark.skipif(not (SHARED / "fixtures" / folder).is_dir(),
                              reason=f"{what} live in ../shared/fixtures/{folder}, which this "
                              "clone does not have")


def sample_pngs(generator, folder: Path, count: int = 2, seed: int = 4) -> Path:
    """``count`` of the generator's own samples as ``s0.png``, ``s1.png``, ... in ``folder``."""
    from inversion.images import save_png

    folder.mkdir(parents=True)
    for i, image in enumerate(generator.sample(count, seed=seed)):
        save_png(image, folder / f"s{i}.png")
    return folder


def half_label_maps(folder: Path, names: tuple[str, ...] = ("s0", "s1"), size: int = 16
                    ) -> Path:
    """Label maps ``NAME.png``: class 0 on the top half, class 1 on the bottom half."""
    folder.mkdir(parents=True)
    for name in names:
        label = np.zeros((size, size), np.uint8)
        label[size // 2:] = 1
        write_png(folder / f"{name}.png", label)
    return folder


def copy_with_json(source: Path, folder: Path, file: str, change: Any) -> Path:
    """A fresh copy of the folder ``source`` whose JSON ``file`` has the keys of ``change``
    (a dict) merged in, or is replaced by ``change`` (anything else)."""
    import json
    import shutil

    shutil.rmtree(folder, ignore_errors=True)
    shutil.copytree(source, folder)
    content = json.loads((folder / file).read_text())
    (folder / file).write_text(json.dumps(content | change if isinstance(change, dict)
                                          else change))
    return folder


def write_png(path: Path, array: np.ndarray) -> Path:
    Image.fromarray(array).save(path)
    return path


def make_tiny_pggan(seed: int = 0) -> PGGANGenerator:
    """16 px PGGAN with a few channels and non-zero biases (so layouts are fully exercised); the
    ToRGB weights are scaled so images stay within [-1, 1] as a trained generator's do."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        generator = PGGANGenerator(resolution=16, z_dim=8, channels=[16, 12, 8])
        with torch.no_grad():
            for name, param in generator.named_parameters():
                if name.endswith("bias"):
                    param.normal_(0, 0.1)
            generator.output.weight.mul_(0.3)
    return generator.eval()


def make_tiny_dcgan(seed: int = 0) -> DCGANGenerator:
    """16 px tutorial-layout DCGAN with randomised BatchNorm statistics."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        generator = DCGANGenerator(z_dim=8, channels=[16, 8])
        with torch.no_grad():
            for module in generator.modules():
                if isinstance(module, nn.BatchNorm2d):
                    module.running_mean.normal_(0, 0.1)
                    module.running_var.uniform_(0.5, 1.5)
                    module.weight.uniform_(0.8, 1.2)
                    module.bias.normal_(0, 0.1)
    return generator.eval()


def make_tiny_stylegan2(seed: int = 0, resolution: int = 16, architecture: str = "skip",
                        c_dim: int = 0) -> StyleGAN2Generator:
    """A StyleGAN2 built by our code (16 px, widths 8): every parameter and buffer perturbed so
    that no loader or forward can get away with a dropped or mis-scaled tensor; the ToRGB
    weights scaled so images stay near [-1, 1]. A conditional one (``c_dim``) makes class 1."""
    blocks = resolution.bit_length() - 2
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        generator = StyleGAN2Generator(resolution=resolution, z_dim=8, w_dim=8,
                                       channels=[8] * (blocks - 1) + [4], mapping_layers=2,
                                       conv_clamp=256.0, architecture=architecture,
                                       c_dim=c_dim)
        with torch.no_grad():
            for name, tensor in generator.state_dict(keep_vars=True).items():
                if name.endswith(("bias", "noise_strength", "w_avg")):
                    tensor.add_(torch.randn_like(tensor) * 0.1)
                if name.endswith("torgb.weight"):
                    tensor.mul_(0.3)
    return generator.with_label(1 if c_dim else None).eval()


def make_tiny_stylegan3(seed: int = 0, config: str = "t", c_dim: int = 0) -> StyleGAN3Generator:
    """A StyleGAN3 laid out by our :meth:`StyleGAN3Generator.design` (16 px, widths 8, 4 layers
    plus the ToRGB, margin 4), every learnt tensor and the magnitude EMAs perturbed; the input's
    affine made non-trivial so codes turn and shift the Fourier features. A conditional one
    (``c_dim``) makes class 1."""
    generator = StyleGAN3Generator.design(16, 8, 8, channel_base=128, channel_max=8,
                                          config=config, num_layers=4, margin_size=4,
                                          c_dim=c_dim, seed=seed)
    rng = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, tensor in generator.state_dict(keep_vars=True).items():
            if name.endswith(("bias", "w_avg", "input.affine.weight")):
                tensor.add_(torch.randn(tensor.shape, generator=rng) * 0.3)
            if name.endswith("magnitude_ema"):
                tensor.fill_(1 + 0.5 * torch.rand([], generator=rng).item())
    return generator.with_label(1 if c_dim else None).eval()


def make_tiny_stylegan1(seed: int = 0, fused: tuple[int, ...] = ()) -> StyleGAN1Generator:
    """A StyleGAN (v1) built by our code (16 px, widths 8 and 4), every parameter and buffer
    perturbed (the level of detail ``synthesis.lod`` stays 0); ``fused`` up-sampling layers."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        generator = StyleGAN1Generator(resolution=16, z_dim=8, w_dim=8, channels=[8, 8, 4],
                                       mapping_layers=2, mapping_width=8, fused=list(fused))
        with torch.no_grad():
            for name, tensor in generator.state_dict(keep_vars=True).items():
                if name != "synthesis.lod" and not name.endswith("blur.kernel"):
                    tensor.add_(torch.randn_like(tensor) * 0.3)
    return generator.eval()


def rendered_targets(generator, n: int = 2, seed: int = 9) -> torch.Tensor:
    """Images the generator itself made (exactly representable targets)."""
    z = torch.randn(n, generator.z_dim, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return generator(z.to(generator.device)).clamp(-1, 1)


class HandMadeGenerator(StagedGenerator):
    """A test family built in code: its config is its family name, its weights are fixed."""

    def config(self) -> dict[str, Any]:
        return {"family": self.family}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> HandMadeGenerator:
        return cls()

    @classmethod
    def from_state_dict(cls, state_dict: dict[str, Any], source: str = "state dict"
                        ) -> HandMadeGenerator:
        generator = cls()
        load_strict(generator, state_dict, source)
        return generator

    def _stages(self):
        return self._stage_list


class ToyGenerator(HandMadeGenerator):
    """Hand-set linear generator, 2x2 px, answers computable by hand.

    z (2) -> ``feat``: 1x1 conv with identity weights, then nearest upsampling to 2x2, so both
    feature channels are constant maps equal to z; ``output``: 1x1 conv, channel 0 -> red,
    channel 1 -> green and blue, no bias, no activation.
    """

    family = "toy"

    def __init__(self):
        super().__init__()
        self.z_dim, self.resolution = 2, 2
        self.feat = nn.Sequential(nn.Conv2d(2, 2, 1, bias=False), nn.Upsample(scale_factor=2))
        self.rgb = nn.Conv2d(2, 3, 1, bias=False)
        with torch.no_grad():
            self.feat[0].weight.copy_(torch.eye(2).view(2, 2, 1, 1))
            colours = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
            self.rgb.weight.copy_(colours.view(3, 2, 1, 1))
        self._stage_list = [("feat", self.feat), ("output", self.rgb)]


class CarryToy(HandMadeGenerator):
    """The toy generator plus one tensor carried across its cut, for known answers.

    At layer ``feat`` the cut carries ``shift`` ``[B, 1]`` = 0.5 * z[:, 0]; the tail adds it to
    every pixel of every channel (no shift when the rule drops it). Rules: ``alpha``, ``mean``,
    ``drop``, and ``latent`` (an extra latent ``shift`` ``[B, 1]``, initialised at the codes'
    mean shift).
    """

    family = "carry-toy"

    def __init__(self):
        super().__init__()
        self.toy = ToyGenerator()
        self.z_dim, self.resolution = 2, 2
        self._stage_list = self.toy._stage_list

    def carry_specs(self, layer):
        if layer.name != "feat":
            return ()
        return (CarrySpec("shift", ("alpha", "mean", "drop", "latent"), "alpha",
                          "added to every pixel"),)

    def head(self, z, layer):
        cut = super().head(z, layer)
        if self.layer(layer).name == "feat":
            cut.carry["shift"] = 0.5 * self._check_latents(z)[:, :1]
        return cut

    def tail(self, cut, layer):
        if self.layer(layer).index == 0:
            z = cut.features.flatten(1)
            return self._run(cut.features, 0, None) + 0.5 * z[:, :1, None, None]
        shift = cut.carry.get("shift")
        images = self._run(cut.features, self.layer(layer).index, None)
        return images if shift is None else images + shift[:, :, None, None]

    def extra_latents(self, layer, rules, cut, seeds=()):
        if rules.get("shift") != "latent":
            return {}
        return {"shift": cut.carry["shift"].mean(dim=1)}

    def carry_from_latents(self, layer, rules, extras):
        return {"shift": extras["shift"]}


class BrightnessToy(HandMadeGenerator):
    """4x4 px: z0 paints the top half red (feature channel 0), z1 the bottom half green
    (channel 1), linearly; so the direction (1, 0) brightens the top half and nothing else."""

    family = "brightness-toy"

    def __init__(self):
        super().__init__()
        self.z_dim, self.resolution = 2, 4
        self.lift = nn.Conv2d(2, 2, 1, bias=False)
        self.up = nn.Upsample(scale_factor=4)
        self.rgb = nn.Conv2d(2, 3, 1, bias=False)
        mask = torch.zeros(2, 4, 4)
        mask[0, :2], mask[1, 2:] = 1, 1
        self.register_buffer("mask", mask)
        with torch.no_grad():
            self.lift.weight.copy_(torch.eye(2).view(2, 2, 1, 1))
            self.rgb.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]])
                                  .view(3, 2, 1, 1))
        self.paint = _Masked(self.lift, self.up, self.mask)
        self._stage_list = [("feat", self.paint), ("output", self.rgb)]


def toy_inversion(codes: torch.Tensor) -> InversionResult:
    """An inversion of the brightness toy holding ``codes`` [B, N, 2], rendered exactly."""
    toy = BrightnessToy().eval()
    layer = toy.layer("feat")
    alphas = torch.ones(codes.shape[0], codes.shape[1], 2)
    with torch.no_grad():
        images = render(toy, codes, alphas, layer).clamp(-1, 1)
    return InversionResult(names=[f"img{i}" for i in range(codes.shape[0])], codes=codes,
                           alphas=alphas, layer=layer, fusion="sum", task={}, recipe={},
                           seeds=list(range(codes.shape[0])), reconstructions=images,
                           outputs=images, observations=images, losses=torch.zeros(len(codes)),
                           trace_iterations=[], trace=torch.empty(0, len(codes)),
                           metrics=[None] * len(codes))


class _Masked(nn.Module):
    def __init__(self, lift, up, mask):
        super().__init__()
        self.lift, self.up, self.mask = lift, up, mask

    def forward(self, z):
        return self.up(self.lift(z)) * self.mask


class ThresholdSegmenter:
    """Labels a pixel ``bright`` when its red or green exceeds 0.25, else ``dark``."""

    vocabulary = Vocabulary("brightness", ("dark", "bright"), ((0, 0, 0), (255, 255, 255)))
    labels = vocabulary.names
    device = torch.device("cpu")

    def segment(self, images: torch.Tensor) -> torch.Tensor:
        return (images[:, :2].amax(dim=1) > 0.25).long().cpu()


class Poisoned(ToyGenerator):
    """The toy generator, but image 1 of a batch turns to NaN once its red passes 0.2."""

    def tail(self, cut, layer):
        images = super().tail(cut, layer)
        poison = torch.zeros_like(images)
        if images.shape[0] > 1 and images[1, 0].mean() > 0.2:
            poison[1] = float("nan")
        return images + poison


# -- the attribution toy: codes that paint known regions ----------------------------------------
REGIONS = ("top", "bottom-left", "bottom-right")
REGION_VOCABULARY = Vocabulary("regions", REGIONS, spread_colors(3))


def region_masks(size: int = 8) -> torch.Tensor:
    """[3, size, size]: top half, bottom-left quarter, bottom-right quarter."""
    masks = torch.zeros(3, size, size)
    half = size // 2
    masks[0, :half] = 1
    masks[1, half:, :half] = 1
    masks[2, half:, half:] = 1
    return masks


class PaintRegions(nn.Module):
    """z -> 6 feature channels; channels 2k and 2k+1 are exactly region k's mask (z is ignored
    through a zero-weight, unit-bias 1x1 conv, so the answer does not depend on the codes)."""

    def __init__(self, z_dim: int, size: int) -> None:
        super().__init__()
        self.lift = nn.Conv2d(z_dim, 6, 1)
        with torch.no_grad():
            self.lift.weight.zero_()
            self.lift.bias.fill_(1.0)
        self.register_buffer("masks", region_masks(size).repeat_interleave(2, dim=0))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.lift(z) * self.masks


class RegionGenerator(HandMadeGenerator):
    """8 px generator whose composing layer ``regions`` paints three known regions: the tail is a
    1x1 conv giving region k's two channels colour k (red, green, blue) times 0.4, no bias."""

    family = "regions"

    def __init__(self) -> None:
        super().__init__()
        self.z_dim, self.resolution = 4, 8
        self.regions = PaintRegions(self.z_dim, self.resolution)
        self.rgb = nn.Conv2d(6, 3, 1, bias=False)
        with torch.no_grad():
            colours = torch.eye(3).repeat_interleave(2, dim=1) * 0.4  # [3 rgb, 6 channels]
            self.rgb.weight.copy_(colours.view(3, 6, 1, 1))
        self._stage_list = [("regions", self.regions), ("output", self.rgb)]


def region_labels(batch: int) -> torch.Tensor:
    masks = region_masks()
    return (masks * torch.arange(3).view(3, 1, 1)).sum(0).long().expand(batch, 8, 8).clone()


def inversion_of(generator, alphas: torch.Tensor, layer="regions", fusion="sum",
                 codes: torch.Tensor | None = None) -> InversionResult:
    """An InversionResult holding given alphas (and random codes), rendered exactly."""
    batch, n = alphas.shape[:2]
    layer = generator.layer(layer)
    codes = codes if codes is not None else torch.randn(batch, n, generator.z_dim)
    with torch.no_grad():
        images = render(generator, codes, alphas, layer, fusion).clamp(-1, 1)
    return InversionResult(
        names=[f"img{i}" for i in range(batch)], codes=codes, alphas=alphas, layer=layer,
        fusion=fusion, task={"name": "inversion"}, recipe={}, seeds=list(range(batch)),
        reconstructions=images, outputs=images, observations=images, losses=torch.zeros(batch),
        trace_iterations=[], trace=torch.empty(0, batch), metrics=[None] * batch)


def specialised_alphas(batch: int = 2) -> torch.Tensor:
    """Code k holds 0.9 on region k's channels and 0.05 on the others."""
    alphas = torch.full((batch, 3, 6), 0.05)
    for k in range(3):
        alphas[:, k, 2 * k:2 * k + 2] = 0.9
    return alphas


# -- the contract every family runs through -----------------------------------------------------
def forward_hook_count(module: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in module.modules())


class GeneratorContract:
    """The tests every generator family must pass. Subclass it as ``TestXxxContract`` and
    implement :meth:`make` (a small generator in eval mode); a family whose cut carries tensors
    names a ``carry`` spec that makes it optimise extra latents in :attr:`extra_carry`."""

    extra_carry: str | None = None  # e.g. "styles=latent": a rule under which extras exist
    extra_layer: str | int = -1  # where to check the extra latents

    def make(self):
        raise NotImplementedError

    @pytest.fixture
    def generator(self):
        return self.make()

    @staticmethod
    def latents(generator, n: int = 3, seed: int = 5) -> torch.Tensor:
        return torch.randn(n, generator.z_dim, generator=torch.Generator().manual_seed(seed))

    def test_layers_are_measured_by_the_head(self, generator):
        layers = generator.layers
        assert [layer.index for layer in layers] == list(range(len(layers)))
        assert layers[0].name == "z" and layers[0].shape == (generator.z_dim, 1, 1)
        assert len({layer.name for layer in layers}) == len(layers)
        z = self.latents(generator, 2)
        with torch.no_grad():
            for layer in layers:
                cut = generator.head(z, layer)
                assert tuple(cut.features.shape) == (2, *layer.shape), layer.describe()
                # the head gives every carry a rule may fuse from the codes; a carry whose only
                # rules are drop and latent (StyleGAN2's noise maps) comes from latents alone
                specs = {spec.name for spec in generator.carry_specs(layer)
                         if {"mean", "alpha"} & set(spec.rules)}
                assert set(cut.carry) == specs, layer.describe()

    def test_head_then_tail_is_the_plain_forward_at_every_layer(self, generator):
        z = self.latents(generator)
        with torch.no_grad():
            plain = generator(z)
            assert plain.shape == (3, 3, generator.resolution, generator.resolution)
            for layer in generator.layers:
                torch.testing.assert_close(generator.tail(generator.head(z, layer), layer), plain,
                                           rtol=0, atol=0, msg=layer.describe)

    def test_one_code_with_unit_alpha_reproduces_the_forward_at_every_layer(self, generator):
        z = self.latents(generator)
        with torch.no_grad():
            plain = generator(z)
            for layer in generator.layers:
                ones = torch.ones(3, 1, layer.channels)
                torch.testing.assert_close(render(generator, z[:, None], ones, layer), plain,
                                           rtol=0, atol=0, msg=layer.describe)

    def test_batched_head_and_tail_equal_one_at_a_time(self, generator):
        z = self.latents(generator)
        layer = generator.layers[len(generator.layers) // 2]
        with torch.no_grad():
            cut = generator.head(z, layer)
            images = generator.tail(cut, layer)
            for i in range(3):
                alone = generator.head(z[i:i + 1], layer)
                torch.testing.assert_close(alone.features, cut.features[i:i + 1])
                for name, value in alone.carry.items():
                    torch.testing.assert_close(value, cut.carry[name][i:i + 1])
                torch.testing.assert_close(generator.tail(alone, layer), images[i:i + 1],
                                           atol=1e-5, rtol=1e-5)

    def test_hooks_always_come_off(self, generator):
        before = forward_hook_count(generator)
        z = self.latents(generator)
        with torch.no_grad():
            for layer in generator.layers:
                generator.tail(generator.head(z, layer), layer)
        assert forward_hook_count(generator) == before

    def test_save_and_load_round_trip(self, generator, tmp_path):
        path = tmp_path / "generator.safetensors"
        if not generator.savable:
            with pytest.raises(InputError, match="cannot be saved"):
                save_generator(generator, path)
            return
        save_generator(generator, path)
        loaded = load_generator_file(path)
        assert type(loaded) is type(generator) and loaded.config() == generator.config()
        z = self.latents(generator)
        with torch.no_grad():
            torch.testing.assert_close(loaded(z), generator(z), rtol=0, atol=0)

    def test_an_inversion_and_its_extra_latents_survive_the_run_directory(self, generator,
                                                                          tmp_path):
        layer = generator.layer(self.extra_layer)
        recipe = get_recipe("adam", "inversion").with_overrides(
            iterations=2, codes=2, layer=layer.name, carry=self.extra_carry or "")
        targets = rendered_targets(generator)
        result = invert(generator, targets, Inversion(), recipe, seeds=[0, 1], options=QUIET)
        if self.extra_carry is not None:
            assert result.extras, "the carry rule should have asked for extra latents"
        run = RunDirectory.open(tmp_path / "run", {"recipe": result.recipe, "task": result.task})
        run.write_batch(result, [ImageRecord(f"img{i}", [], None, None) for i in range(2)])
        loaded = run.load_result()
        assert loaded.carry == result.carry and set(loaded.extras) == set(result.extras)
        for name, value in result.extras.items():
            torch.testing.assert_close(loaded.extras[name], value, rtol=0, atol=0)
        torch.testing.assert_close(loaded.codes, result.codes, rtol=0, atol=0)
        with torch.no_grad():
            again = render(generator, loaded.codes, loaded.alphas, loaded.layer, loaded.fusion,
                           loaded.carry, loaded.extras).clamp(-1, 1)
        torch.testing.assert_close(again, loaded.reconstructions, atol=1 / 127.5, rtol=0)

    def test_tuning_changes_each_image_and_reloads_exactly(self, generator, tmp_path):
        layer = generator.layer(self.extra_layer)
        recipe = get_recipe("adam", "inversion").with_overrides(
            iterations=2, codes=2, layer=layer.name, carry=self.extra_carry or "")
        tune = TuneSettings(tune=3, tune_part="all", tune_rank=2, tune_lr=0.05)
        targets = rendered_targets(generator)
        result = invert(generator, targets, Inversion(), recipe, seeds=[0, 1], options=QUIET,
                        tune=tune)
        assert len(result.adapters) == 2 and result.untuned.shape == targets.shape
        assert not torch.equal(result.adapters[0].tensors[next(iter(
            result.adapters[0].tensors))], result.adapters[1].tensors[next(iter(
                result.adapters[1].tensors))]), "each image has its own change"
        run = RunDirectory.open(tmp_path / "run", {"recipe": result.recipe, "task": result.task,
                                                   "tune": tune.to_dict()})
        run.write_batch(result, [ImageRecord(f"img{i}", [], None, None) for i in range(2)])
        loaded = run.load_result(generator=generator)
        with torch.no_grad():
            for i, change in enumerate(loaded.adapters):
                again = render(change.apply(generator), loaded.codes[i:i + 1],
                               loaded.alphas[i:i + 1], loaded.layer, loaded.fusion,
                               loaded.carry, {k: v[i:i + 1] for k, v in loaded.extras.items()})
                torch.testing.assert_close(again.clamp(-1, 1), result.reconstructions[i:i + 1],
                                           rtol=0, atol=0)

    def test_plain_latent_optimisation_at_layer_zero(self, generator):
        z = self.latents(generator)[:, None]
        with torch.no_grad():
            torch.testing.assert_close(
                render(generator, z, initial_alphas(3, 1, generator.z_dim), generator.layer(0)),
                generator(z[:, 0]), rtol=0, atol=0)


# -- NVIDIA's pickle layout, written for tests (our loader must read it without running code) -----
NVIDIA_CLASSES = {"mapping": "MappingNetwork", "synthesis": "SynthesisNetwork", "conv0":
                  "SynthesisLayer", "conv1": "SynthesisLayer", "torgb": "ToRGBLayer",
                  "affine": "FullyConnectedLayer"}


class FakePersistence:
    """Registers a stand-in ``torch_utils.persistence`` module so that ``pickle`` can write
    NVIDIA's persistent objects (with whatever ``module_src`` a test wants embedded)."""

    def __enter__(self):
        import sys
        import types

        self.sys = sys
        package, module = types.ModuleType("torch_utils"), types.ModuleType(
            "torch_utils.persistence")

        def _reconstruct_persistent_obj(meta):  # what NVIDIA's loader would do: run the code
            exec(compile(meta["module_src"], "<embedded>", "exec"), {})
            raise AssertionError("the embedded code ran")

        _reconstruct_persistent_obj.__module__ = "torch_utils.persistence"
        _reconstruct_persistent_obj.__qualname__ = "_reconstruct_persistent_obj"
        module._reconstruct_persistent_obj = _reconstruct_persistent_obj
        package.persistence = module
        self.saved = {k: sys.modules.get(k) for k in ("torch_utils", "torch_utils.persistence")}
        sys.modules["torch_utils"], sys.modules["torch_utils.persistence"] = package, module
        return module

    def __exit__(self, *exc):
        for key, value in self.saved.items():
            if value is None:
                self.sys.modules.pop(key, None)
            else:
                self.sys.modules[key] = value


class Persistent:
    def __init__(self, reconstruct, meta):
        self.reconstruct, self.meta = reconstruct, meta

    def __reduce__(self):
        return (self.reconstruct, (self.meta,))


def nvidia_pickle(generator: StyleGAN2Generator, path: Path, module_src: str = "pass",
                  top: dict | None = None, class_name: str = "Generator",
                  edit=None) -> Path:
    """Write ``generator`` as NVIDIA's code would pickle it (``G``, ``D``, ``G_ema``; persistent
    objects with embedded ``module_src``, tensors, per-layer settings). ``edit(root)`` may damage
    the network's stored state (a dict whose ``_modules`` hold ``Persistent`` children) first."""
    import pickle
    from collections import OrderedDict

    tensors = {k: v.detach().clone() for k, v in generator.state_dict().items()}

    def node(reconstruct, prefix: str, module: nn.Module, name: str) -> Persistent:
        params = OrderedDict((k, tensors[prefix + k]) for k, _ in
                             module.named_parameters(recurse=False))
        buffers = OrderedDict((k, tensors[prefix + k]) for k, _ in
                              module.named_buffers(recurse=False) if prefix + k in tensors)
        state = {"training": False, "_parameters": params, "_buffers": buffers,
                 "_non_persistent_buffers_set": set(), "_modules": OrderedDict()}
        if name in ("conv0", "conv1", "torgb"):
            state["conv_clamp"] = generator.conv_clamp
            if name != "torgb":
                state.update(activation="lrelu", use_noise=True, kernel_size=3)
                buffers["resample_filter"] = fir_filter()
        if name.startswith("b") and name[1:].isdigit():
            state["architecture"] = "skip"
            buffers["resample_filter"] = fir_filter()
        if isinstance(module, nn.Module) and hasattr(module, "bias_gain"):
            state.update(weight_gain=module.weight_gain, bias_gain=module.bias_gain)
        for child_name, child in module.named_children():
            state["_modules"][child_name] = node(reconstruct, f"{prefix}{child_name}.", child,
                                                 child_name)
        klass = NVIDIA_CLASSES.get(name, "SynthesisBlock" if name.startswith("b") else
                                   "FullyConnectedLayer")
        return Persistent(reconstruct, {"type": "class", "version": 6, "module_src": module_src,
                                        "class_name": klass, "state": state})

    with FakePersistence() as persistence:
        reconstruct = persistence._reconstruct_persistent_obj
        root = {"training": False, "_parameters": OrderedDict(), "_buffers": OrderedDict(),
                "_non_persistent_buffers_set": set(), "_modules": OrderedDict(),
                "z_dim": generator.mapping_z_dim, "c_dim": 0, "w_dim": generator.w_dim,
                "img_resolution": generator.resolution, "img_channels": 3, **(top or {})}
        for child in ("mapping", "synthesis"):
            root["_modules"][child] = node(reconstruct, f"{child}.", getattr(generator, child),
                                           child)
        if edit is not None:
            edit(root)
        network = Persistent(reconstruct, {"type": "class", "version": 6,
                                           "module_src": module_src, "class_name": class_name,
                                           "state": root})
        path.write_bytes(pickle.dumps({"G": network, "D": None, "G_ema": network,
                                       "augment_pipe": None}, protocol=4))
    return path


def nvidia_stylegan3_pickle(generator: StyleGAN3Generator, path: Path, edit=None) -> Path:
    """Write ``generator`` as NVIDIA's stylegan3 code pickles ``G_ema``: persistent objects
    whose state keeps sizes as numpy arrays and scalars, and each layer's factors, taps and
    padding. ``edit(synthesis_state)`` may change the synthesis network's stored state first."""
    import pickle
    from collections import OrderedDict

    def state(module: nn.Module, **settings) -> dict:
        return {"training": False, "_non_persistent_buffers_set": set(),
                "_parameters": OrderedDict((k, v.detach().clone()) for k, v in
                                           module.named_parameters(recurse=False)),
                "_buffers": OrderedDict((k, None if v is None else v.detach().clone())
                                        for k, v in module._buffers.items()),
                "_modules": OrderedDict(), **settings}

    def dense(module, reconstruct) -> Persistent:
        return Persistent(reconstruct, {"type": "class", "version": 6, "module_src": "pass",
                                        "class_name": "FullyConnectedLayer", "state": state(
                                            module, weight_gain=np.float64(module.weight_gain),
                                            bias_gain=module.bias_gain)})

    def obj(reconstruct, class_name, module, children=(), **settings) -> Persistent:
        node = state(module, **settings)
        for name, child in children:
            node["_modules"][name] = child
        return Persistent(reconstruct, {"type": "class", "version": 6, "module_src": "pass",
                                        "class_name": class_name, "state": node})

    with FakePersistence() as persistence:
        reconstruct = persistence._reconstruct_persistent_obj
        mapping = generator.mapping
        fcs = [(f"fc{i}", dense(getattr(mapping, f"fc{i}"), reconstruct))
               for i in range(mapping.layers)]
        if generator.c_dim:
            fcs.append(("embed", dense(mapping.embed, reconstruct)))
        layers = []
        source = generator.synthesis
        spec = generator.input_spec
        layers.append(("input", obj(reconstruct, "SynthesisInput", source.input,
                                    [("affine", dense(source.input.affine, reconstruct))],
                                    channels=spec.channels, size=np.array([spec.size] * 2),
                                    sampling_rate=np.float64(spec.sampling_rate),
                                    bandwidth=np.float64(spec.bandwidth))))
        for name, spec in zip(source.names, generator.specs, strict=True):
            module = getattr(source, name)
            layers.append((name, obj(
                reconstruct, "SynthesisLayer", module,
                [("affine", dense(module.affine, reconstruct))], is_torgb=spec.torgb,
                in_channels=spec.in_channels, out_channels=spec.out_channels,
                in_size=np.array([spec.in_size] * 2), out_size=np.array([spec.out_size] * 2),
                conv_kernel=spec.conv_kernel, conv_clamp=generator.conv_clamp,
                up_factor=spec.up, down_factor=spec.down, up_taps=spec.up_taps,
                down_taps=spec.down_taps, down_radial=spec.radial, use_fp16=np.bool_(True),
                padding=[np.int64(p) for p in (*spec.padding, *spec.padding)])))
        synthesis = obj(reconstruct, "SynthesisNetwork", source, layers,
                        layer_names=list(source.names), output_scale=generator.output_scale,
                        num_ws=generator.num_ws)
        if edit is not None:
            edit(synthesis.meta["state"])
        network = obj(reconstruct, "Generator", generator,
                      [("mapping", obj(reconstruct, "MappingNetwork", mapping, fcs,
                                       num_layers=mapping.layers)),
                       ("synthesis", synthesis)],
                      z_dim=generator.mapping_z_dim, c_dim=generator.c_dim,
                      w_dim=generator.w_dim, img_resolution=generator.resolution,
                      img_channels=3, num_ws=generator.num_ws)
        network.meta["state"]["_buffers"] = OrderedDict()
        network.meta["state"]["_parameters"] = OrderedDict()
        path.write_bytes(pickle.dumps({"G": network, "D": None, "G_ema": network,
                                       "augment_pipe": None}, protocol=4))
    return path


# -- tiny transformers segmenter folders ----------------------------------------------------------
def tiny_swin():
    import transformers

    return transformers.SwinConfig(image_size=64, patch_size=4, embed_dim=8, depths=[1] * 4,
                                   num_heads=[1] * 4, window_size=2,
                                   out_features=["stage1", "stage2", "stage3", "stage4"])


def task_tokenizer():
    """A word-level tokenizer that knows OneFormer's task sentences ("the task is semantic")."""
    import transformers
    from tokenizers import Tokenizer, models, pre_tokenizers

    words = ["[PAD]", "[UNK]", "the", "task", "is", "semantic", "instance", "panoptic"]
    backend = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    return transformers.PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="[PAD]",
                                                unk_token="[UNK]")


def tiny_hf_folder(kind: str, side: int, directory: Path, labels: dict[int, str] | None = None
                   ) -> Path:
    """A random-initialised transformers segmenter of ``kind`` (segformer, upernet, mask2former,
    oneformer) saved with its processor (and OneFormer's tokenizer); the processor resizes to
    ``side`` x ``side``. ``labels`` (id2label) defaults to ADE20K-150."""
    import transformers

    labels = labels if labels is not None else dict(enumerate(ADE20K_150.names))
    ids = {"id2label": labels, "label2id": {v: k for k, v in labels.items()},
           "num_labels": len(labels)}
    size = {"height": side, "width": side}
    with torch.random.fork_rng():
        torch.manual_seed(side)
        if kind == "segformer":
            model = transformers.SegformerForSemanticSegmentation(transformers.SegformerConfig(
                num_encoder_blocks=2, depths=[1, 1], sr_ratios=[2, 1], hidden_sizes=[8, 16],
                patch_sizes=[7, 3], strides=[4, 2], num_attention_heads=[1, 1],
                mlp_ratios=[2, 2], decoder_hidden_size=16, **ids))
            processor = transformers.SegformerImageProcessor(size=size)
        elif kind == "upernet":
            model = transformers.UperNetForSemanticSegmentation(transformers.UperNetConfig(
                backbone_config=transformers.ConvNextConfig(
                    hidden_sizes=[8, 8, 16, 16], depths=[1, 1, 1, 1],
                    out_features=["stage1", "stage2", "stage3", "stage4"]),
                hidden_size=16, auxiliary_in_channels=16, auxiliary_channels=8,
                pool_scales=[1, 2], **ids))
            processor = transformers.SegformerImageProcessor(size=size)
        elif kind == "mask2former":
            model = transformers.Mask2FormerForUniversalSegmentation(
                transformers.Mask2FormerConfig(
                    backbone_config=tiny_swin(), feature_size=32, mask_feature_size=32,
                    hidden_dim=32, encoder_feedforward_dim=32, dim_feedforward=32,
                    encoder_layers=1, decoder_layers=2, num_attention_heads=2, num_queries=5,
                    common_stride=4, **ids))
            processor = transformers.Mask2FormerImageProcessor(size=size)
        else:
            config = transformers.OneFormerConfig(
                backbone_config=tiny_swin(), hidden_dim=32, mask_dim=32, conv_dim=32,
                encoder_feedforward_dim=32, dim_feedforward=32, encoder_layers=1,
                decoder_layers=2, num_attention_heads=2, num_queries=6, text_encoder_width=32,
                text_encoder_num_layers=1, text_encoder_context_length=8,
                text_encoder_proj_layers=1, text_encoder_vocab_size=8, task_seq_len=8,
                max_seq_len=8, text_encoder_n_ctx=2, common_stride=4, is_training=False, **ids)
            model = transformers.OneFormerForUniversalSegmentation(config)
            processor = transformers.OneFormerImageProcessor(size=size, num_labels=len(labels),
                                                             class_info_file=None)
            task_tokenizer().save_pretrained(str(directory))
        if kind in ("mask2former", "oneformer"):
            sharpen_queries(model, len(labels))
    model.eval().save_pretrained(str(directory))
    processor.save_pretrained(str(directory))
    return directory


@torch.no_grad()
def sharpen_queries(model: torch.nn.Module, classes: int) -> None:
    """At random init every query says "about every class, everywhere" and the semantic map is
    one class; larger class and mask heads make queries disagree, so maps say something."""
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) and module.out_features == classes + 1:
            module.weight.mul_(40)
        if name.endswith(("mask_embedder", "mask_embed")):
            for parameter in module.parameters():
                parameter.mul_(4)
