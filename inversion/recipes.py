"""Recipes: complete optimisation settings, per task, with every field overridable.

``official`` reproduces the public mGANprior scripts: plain SGD (lr 1.0, no momentum), alphas 1/N,
the ``/N`` fusion, VGG16 ``relu3_3`` features of images resized to 256 px with the 0.001 factor,
and per task the codes, iterations, perceptual weight and initialisation of its script
(``multi_code_inversion.py``, ``colorization.py``, ``super_resolution.py``, ``inpainting.py``;
denoising, which has no official script, takes the inversion settings). Their composing layers
are PGGAN indices (6: 16x16 features, 4: 8x8); a recipe stores the feature side instead, so the
same rule picks layer 6 / layer 4 on any PGGAN and the matching block on other generators.

``adam``: Adam (lr 0.01; for StyleGAN2 0.03 for composed codes in Z or W, 0.1 for a single code
or W+ codes: ``ADAM_LR_BY_SPACE``), the
``sum`` fusion, 20 codes, 300 iterations after an alpha warm-up (4 steps per iteration for
inversion, 3 for the restoration tasks; Adam's beta2 0.95 and 0.999), and the official scripts'
composing layers and perceptual weights. Tuned on the DigiFace DCGAN against
DigiFace samples and real bedroom and church photos (``benchmarks/recipes.py``, table in
``docs/benchmarks.md``, measured before the warm-up existed): lr 0.01 beat 0.003, 0.005, 0.03
and 0.1 at every budget from 50 to 500 iterations; after 300 iterations it is 16 dB (samples)
and 12 dB (real photos) above the official SGD recipe; 20 codes cost 0.6 dB against 30 at equal
iterations and are 1.5x faster per iteration (slightly ahead at equal time).

``alpha_warmup`` (``adam``: per task, in ``_ADAM``; 0 in the others): before the iterations,
``alpha_warmup * iterations`` steps on the alphas (and extra latents) alone, over head features
computed once: the alphas carry most of the fit, and such a step costs the tail only.

``converge_window``/``converge_tolerance``: with a window W > 0, every W iterations an image
whose best loss fell by less than the tolerance (relative) over the last W iterations stops and
leaves the batch; ``iterations`` stays the cap. Off by default.

``projector``: NVIDIA's projector (stylegan2-ada-pytorch ``projector.py``, the same in
stylegan3), written from its documented settings (``../shared/REFERENCES.md``): one code in W (or
W+, rosinality's ``--w_plus``) starting at ``w_avg`` (the mean of 10,000 mapped samples,
``inversion.projector``), Adam at 0.1 for 1,000 steps with the learning rate ramped up over the
first 5% and down (cosine) over the last 25%, latent noise of ``0.05 * w_std`` decaying
quadratically to zero over the first 75%, the noise maps optimised beside the code (regulariser
weight 1e5, maps re-normalised after every step), and LPIPS-VGG at 256 px as the image distance
(pixel MSE where the VGG16 weights are absent: ``for_run`` records which).

``optimize_noise``: per-image noise maps optimised beside the codes (families with noise maps:
StyleGAN2), for any recipe; ``None`` (the projector's default): where the generator has them.
``lr_rampup``/``lr_rampdown``/``latent_noise``/``latent_noise_ramp``/``noise_regularization``:
the projector's schedule, off (0) in the other recipes except the regulariser, which applies
whenever noise maps are optimised.

``latent_space``: where codes live, for families with more than one (StyleGAN2: ``z``, ``w``,
``w+``). ``alphas``: ``train`` optimises the channel weights with the codes, ``fixed`` keeps them
at 1/N, ``auto`` (the default) fixes them for the single-code baseline (one code at layer 0:
plain latent optimisation, ``G(z)``) and trains them everywhere else. ``carry``: the fusion rule
of each tensor a family carries across the cut (``NAME=RULE,...``; empty: the family's defaults).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING, Any

from inversion.options import FUSIONS, PERCEPTUAL_DISTANCES, VGG_LAYERS, parse_carry
from mganprior.core.errors import InputError, field_error
from mganprior.core.settings import option

if TYPE_CHECKING:
    from inversion.generators.base import Layer, LayeredGenerator

RECIPES = ("official", "adam", "projector")
OPTIMIZERS = ("sgd", "adam")
INITS = ("normal", "zero", "w_avg")
ALPHA_MODES = ("auto", "train", "fixed")


@dataclass(frozen=True)
class Recipe:
    name: str = option("the recipe these settings started from", RECIPES)
    optimizer: str = option("optimiser of codes, alphas and extra latents", OPTIMIZERS)
    lr: float | None = option("learning rate (unset: the one measured for the generator's "
                              "family, latent space and code count)")
    iterations: int = option("optimisation steps (with converge_window: the most)")
    codes: int = option("number of latent codes N (1 at layer 0: plain single-code "
                        "optimisation)")
    layer: str | int | None = option("composing layer: name or index from `mganprior zoo NAME` "
                                     "(negative counts from the deepest; unset: the deepest "
                                     "layer at most layer_side wide)")
    layer_side: int = option("with no layer: the widest feature side the cut may have")
    fusion: str = option("sum: F = sum alpha_n F_n; mean: the official (1/N) sum", FUSIONS)
    init: str = option("initial codes: seeded normal draws, zeros, or w_avg (W and W+)", INITS)
    mse_weight: float = option("weight of the pixel MSE", default=1.0)
    perceptual_lambda: float = option("weight of the perceptual distance (times "
                                      "perceptual_factor)", default=1.0)
    perceptual_factor: float = option("scale of the perceptual distance (the official 0.001)",
                                      default=0.001)
    perceptual_layer: str = option("VGG16 layer of the l1 perceptual distance",
                                   tuple(VGG_LAYERS), default="relu3_3")
    perceptual_size: int | None = option("side images are resized to for the perceptual "
                                         "distance (unset: their own)", default=256)
    alphas: str = option("train or fix the channel weights (auto: fixed only for the "
                         "single-code baseline, one code at layer 0)", ALPHA_MODES,
                         default="auto")
    carry: str = option("fusion rule of each tensor the cut carries besides the features, "
                        "NAME=RULE[,NAME=RULE] (see `mganprior zoo NAME`)", default="")
    latent_space: str = option("where codes live, for generators with more than one "
                               "(StyleGAN: z, w, w+)", default="z")
    converge_window: int = option("every W iterations, stop images whose best loss fell by less "
                                  "than converge_tolerance over the last W (0: off)", default=0)
    converge_tolerance: float = option("relative improvement below which an image has "
                                       "converged", default=1e-3)
    perceptual_distance: str = option("l1: VGG16 feature L1 (mGANprior); lpips: LPIPS-VGG "
                                      "(NVIDIA's projector)", PERCEPTUAL_DISTANCES,
                                      default="l1")
    optimize_noise: bool | None = option("optimise per-image noise maps beside the codes "
                                         "(StyleGAN2; unset: where the generator has them)",
                                         default=False)
    noise_regularization: float = option("weight of the noise-map regulariser, when noise is "
                                         "optimised", default=1e5)
    lr_rampup: float = option("fraction of the iterations over which the learning rate ramps "
                              "up", default=0.0)
    lr_rampdown: float = option("fraction at the end over which it ramps down (cosine)",
                                default=0.0)
    latent_noise: float = option("initial std of the noise added to codes, in units of w_std",
                                 default=0.0)
    latent_noise_ramp: float = option("fraction of the iterations over which the latent noise "
                                      "decays to zero", default=0.75)
    alpha_warmup: float = option("steps on the alphas alone before the iterations, as a "
                                 "multiple of iterations: over head features computed once, "
                                 "each costs the tail only", default=0.0)
    adam_beta1: float = option("Adam's decay of the gradient's running mean", default=0.9)
    adam_beta2: float = option("Adam's decay of the squared gradient's running mean (lower: "
                               "the step size follows the gradient's scale sooner)",
                               default=0.999)

    @property
    def needs_latent_stats(self) -> bool:
        """Whether runs need W's statistics: a ``w_avg`` start or latent noise."""
        return self.init == "w_avg" or bool(self.latent_noise)

    @property
    def perceptual_weight(self) -> float:
        return self.perceptual_lambda * self.perceptual_factor

    def with_overrides(self, **overrides: Any) -> Recipe:
        """A copy with the given fields replaced (``None`` values are ignored)."""
        recipe = replace(self, **{k: v for k, v in overrides.items() if v is not None})
        recipe.validate()
        return recipe

    def validate(self) -> None:
        """Every field in range; errors name the field."""
        if self.codes < 1:
            raise field_error("codes", f"must be at least 1, got {self.codes}")
        if self.iterations < 0:
            raise field_error("iterations", f"must be >= 0, got {self.iterations}")
        if self.lr is not None and not 0 < self.lr < math.inf:
            raise field_error("lr", f"must be a finite number above 0, got {self.lr}")
        self._check_choices()
        self._check_numbers()
        parse_carry(self.carry)
        if isinstance(self.converge_window, bool) or not isinstance(self.converge_window, int) \
                or self.converge_window < 0:
            raise field_error("converge_window", f"must be an integer >= 0, got "
                                                 f"{self.converge_window}")

    def _check_choices(self) -> None:
        choices = {"optimizer": OPTIMIZERS, "init": INITS, "fusion": FUSIONS,
                   "alphas": ALPHA_MODES, "perceptual_distance": PERCEPTUAL_DISTANCES}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise field_error(name, f"must be one of {', '.join(allowed)}, got "
                                        f"{getattr(self, name)!r}")
        if self.optimize_noise not in (True, False, None):
            raise field_error("optimize_noise", f"must be true, false or null, got "
                                                f"{self.optimize_noise!r}")

    def _check_numbers(self) -> None:
        for name in ("lr_rampup", "lr_rampdown", "latent_noise_ramp"):
            if not 0 <= getattr(self, name) <= 1:
                raise field_error(name, f"must be a fraction in [0, 1], got {getattr(self, name)}")
        for name in ("adam_beta1", "adam_beta2"):
            if not 0 <= getattr(self, name) < 1:
                raise field_error(name, f"must be in [0, 1), got {getattr(self, name)}")
        for name in ("mse_weight", "perceptual_lambda", "perceptual_factor", "latent_noise",
                     "noise_regularization", "alpha_warmup"):
            if not 0 <= getattr(self, name) < math.inf:
                raise field_error(name, f"must be a finite number >= 0, got "
                                        f"{getattr(self, name)}")
        if self.perceptual_size is not None and not 16 <= self.perceptual_size <= 1024:
            raise field_error("perceptual_size", f"must be between 16 and 1024 pixels, got "
                                                 f"{self.perceptual_size}")
        if not 0 <= self.converge_tolerance < 1:
            raise field_error("converge_tolerance", f"must be in [0, 1), got "
                                                    f"{self.converge_tolerance}")

    def resolve_layer(self, generator: LayeredGenerator) -> Layer:
        generator = generator.in_space(self.latent_space)
        if self.layer is not None:
            return generator.layer(self.layer)
        return default_layer(generator, self.layer_side)

    def trains_alphas(self, layer: Layer) -> bool:
        """Whether alphas are optimised at ``layer`` (``auto``: all but the single-code
        baseline, where alpha stays 1 so the optimisation is exactly plain ``G(z)``)."""
        if self.alphas == "auto":
            return not (layer.index == 0 and self.codes == 1)
        return self.alphas == "train"

    def resolve_lr(self, generator: LayeredGenerator) -> float:
        """The learning rate: the recipe's, or the one measured for the generator's family,
        latent space and code count (:data:`ADAM_LR_BY_SPACE`), else :data:`ADAM_LR`."""
        if self.lr is not None:
            return self.lr
        setting = "single" if self.codes == 1 else "composed"
        return ADAM_LR_BY_SPACE.get((generator.family, self.latent_space, setting), ADAM_LR)

    def check_generator(self, generator: LayeredGenerator) -> None:
        """Refuse, in one line, settings this generator cannot run: a ``w_avg`` start without a
        W space, noise optimisation without noise maps."""
        if self.init == "w_avg" and ("w" not in generator.latent_spaces
                                     or self.latent_space not in ("w", "w+")):
            fits = [name for name in RECIPES if name != "projector"]
            what = (f"a {generator.family} generator, which has no W space"
                    if "w" not in generator.latent_spaces else f"codes in {self.latent_space}")
            raise InputError(f"recipe {self.name} starts at w_avg and needs codes in W or W+ "
                             f"(--latent-space w or w+ of a style-based generator), not {what}"
                             f"; recipes that fit: {', '.join(fits)}", field="recipe")
        if self.latent_noise and ("w" not in generator.latent_spaces
                                  or self.latent_space not in ("w", "w+")):
            raise InputError(f"latent_noise is scaled by the spread of W and needs codes in W or "
                             f"W+ of a style-based generator, not codes in {self.latent_space} of "
                             f"a {generator.family} generator", field="latent_noise")
        if self.optimize_noise:
            generator = generator.in_space(self.latent_space)
            if not has_noise_maps(generator, self.resolve_layer(generator)):
                raise InputError(f"optimize_noise: a {generator.family} generator has no "
                                 "optimisable noise maps", field="optimize_noise")

    def check_start(self) -> None:
        """Refuse a start that cannot work for a run: several codes all at ``w_avg`` (they get
        the same gradient and stay one). The engine runs it anyway (memory planning does)."""
        if self.init == "w_avg" and self.codes > 1:
            raise field_error("init", f"w_avg starts every code at the same point, so {self.codes} "
                                      "codes would stay one; use it with codes 1 (the projector)")

    def optimizes_noise(self, generator: LayeredGenerator, layer: Layer) -> bool:
        """Whether noise maps are optimised: asked for (or ``carry`` says ``noise=latent``), or
        (None) where the generator has them."""
        if parse_carry(self.carry).get("noise") == "latent":
            return True
        if self.optimize_noise is None:
            return has_noise_maps(generator, layer)
        return self.optimize_noise

    def carry_rules(self, generator: LayeredGenerator, layer: Layer) -> dict[str, str]:
        """The fusion rule of every carried tensor: the ``carry`` field, the family's defaults,
        and ``noise=latent`` when noise maps are optimised."""
        from inversion.composition import resolve_carry  # torch: only when a run is planned

        rules = resolve_carry(generator, layer, self.carry)
        if self.optimizes_noise(generator, layer):
            rules["noise"] = "latent"
        return rules

    def warmup_iterations(self, layer: Layer) -> int:
        """How many steps on the alphas alone come before the iterations (none where alphas
        are fixed)."""
        return round(self.alpha_warmup * self.iterations) if self.trains_alphas(layer) else 0

    def lr_factor(self, step: int) -> float:
        """The learning-rate multiplier at ``step``: a linear ramp up over the first
        ``lr_rampup`` and a cosine ramp down over the last ``lr_rampdown`` of the iterations
        (NVIDIA's projector), 1 without them and in the alpha warm-up (negative steps): the
        schedule shapes the iterations."""
        if step < 0:
            return 1.0
        t = step / max(1, self.iterations)
        factor = 1.0
        if self.lr_rampdown:
            factor = 0.5 - 0.5 * math.cos(math.pi * min(1.0, (1.0 - t) / self.lr_rampdown))
        if self.lr_rampup:
            factor *= min(1.0, t / self.lr_rampup)
        return factor

    def latent_noise_std(self, step: int, w_std: float) -> float:
        """The std of the noise added to codes at ``step``: ``w_std * latent_noise *
        max(0, 1 - t / latent_noise_ramp)^2``."""
        if not self.latent_noise:
            return 0.0
        t = step / max(1, self.iterations)
        ramp = max(0.0, 1.0 - t / self.latent_noise_ramp) if self.latent_noise_ramp else 0.0
        return w_std * self.latent_noise * ramp**2

    def for_run(self, generator: LayeredGenerator, perceptual_used: bool) -> Recipe:
        """The recipe as it actually runs: the layer, learning rate, alpha mode and noise
        optimisation resolved, no perceptual weight when no perceptual module is used, and pixel
        MSE (weight 1) for a recipe whose only distance was the perceptual one."""
        generator = generator.in_space(self.latent_space)
        layer = self.resolve_layer(generator)
        pixel_only = not perceptual_used and self.mse_weight == 0
        return replace(self, layer=layer.name, lr=self.resolve_lr(generator),
                       alphas="train" if self.trains_alphas(layer) else "fixed",
                       alpha_warmup=self.alpha_warmup if self.trains_alphas(layer) else 0.0,
                       optimize_noise=self.optimizes_noise(generator, layer),
                       mse_weight=1.0 if pixel_only else self.mse_weight,
                       perceptual_lambda=self.perceptual_lambda if perceptual_used else 0.0)

    def loss_name(self, perceptual_used: bool) -> str:
        """What the image distance is, in words, for the run's record."""
        run = self if perceptual_used or self.mse_weight else replace(self, mse_weight=1.0)
        parts = [f"{run.mse_weight:g} * pixel MSE"] if run.mse_weight else []
        if perceptual_used and self.perceptual_weight:
            distance = ("LPIPS-VGG16" if self.perceptual_distance == "lpips" else
                        f"VGG16 {self.perceptual_layer} L1")
            parts.append(f"{self.perceptual_weight:g} * {distance}")
        return " + ".join(parts) or "nothing"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def has_noise_maps(generator: LayeredGenerator, layer: Layer) -> bool:
    return any(spec.name == "noise" for spec in generator.carry_specs(layer))


def default_layer(generator: LayeredGenerator, side: int) -> Layer:
    """The deepest composable layer whose feature maps are at most ``side`` pixels wide."""
    candidates = [layer for layer in generator.layers[1:] if layer.shape[-1] <= side]
    return candidates[-1] if candidates else generator.layers[1]


# (codes, layer side, iterations, perceptual lambda, init) per task, from the official scripts.
_OFFICIAL = {
    "inversion": (30, 16, 3000, 1.0, "normal"),
    "colorization": (20, 8, 1500, 1.0, "normal"),
    "super-resolution": (30, 16, 2000, 1.0, "zero"),
    "inpainting": (30, 8, 3000, 0.1, "normal"),
    "denoising": (30, 16, 3000, 1.0, "normal"),
}

# The adam recipe: (codes, layer side, iterations, perceptual lambda, alpha warm-up, Adam's beta2);
# layers and lambdas as the official scripts, 20 codes and 300 iterations everywhere. The warm-up
# (alpha-only steps per iteration) and beta2 (torch's and NVIDIA's projector's: 0.999) were chosen
# together for inversion (benchmarks/speed.py --parts quality, docs/benchmarks.md): the alphas carry
# most of the fit, a step over features computed once costs the tail alone (a sixth to a tenth of
# an iteration), and with a decay of 0.95 Adam's steps follow the shrinking gradients sooner:
# fewer iterations to the official recipe's quality on the bedroom PGGAN and higher PSNR after 300
# iterations on every prior. The restoration tasks keep 3 and 0.999: there the faster fit of the
# observation moved the PSNR to the clean image by -1.1 to +0.5 dB (--parts tasks).
_ADAM = {
    "inversion": (20, 16, 300, 1.0, 4.0, 0.95),
    "colorization": (20, 8, 300, 1.0, 3.0, 0.999),
    "super-resolution": (20, 16, 300, 1.0, 3.0, 0.999),
    "inpainting": (20, 8, 300, 0.1, 3.0, 0.999),
    "denoising": (20, 16, 300, 1.0, 3.0, 0.999),
}
ADAM_LR = 0.01
# Measured where ADAM_LR is not the best (docs/stylegan.md, on the fixture and the trained
# bedroom-stylegan2-64): composed StyleGAN2 codes in Z or W do best at 0.03; a single StyleGAN2
# code (any space) and W+ codes at 0.1. Keys: (family, latent space, "single" or "composed").
# StyleGAN (v1), measured on the official-layout fixture (docs/stylegan.md): 0.1 everywhere.
ADAM_LR_BY_SPACE = {("stylegan2", "z", "composed"): 0.03, ("stylegan2", "w", "composed"): 0.03,
                    ("stylegan2", "w+", "composed"): 0.1, ("stylegan2", "z", "single"): 0.1,
                    ("stylegan2", "w", "single"): 0.1, ("stylegan2", "w+", "single"): 0.1,
                    **{("stylegan1", space, kind): 0.1 for space in ("z", "w", "w+")
                       for kind in ("single", "composed")}}


def get_recipe(name: str, task: str) -> Recipe:
    """The named recipe's defaults for ``task``."""
    if task not in _OFFICIAL:
        raise InputError(f"task {task!r} is unknown; tasks: {', '.join(_OFFICIAL)}",
                         field="task")
    if name == "official":
        codes, side, iterations, lam, init = _OFFICIAL[task]
        return Recipe("official", "sgd", 1.0, iterations, codes, None, side, "mean", init,
                      perceptual_lambda=lam)
    if name == "adam":
        codes, side, iterations, lam, warmup, beta2 = _ADAM[task]
        return Recipe("adam", "adam", None, iterations, codes, None, side, "sum", "normal",
                      perceptual_lambda=lam, perceptual_size=None, alpha_warmup=warmup,
                      adam_beta2=beta2)
    if name == "projector":
        return Recipe("projector", "adam", 0.1, 1000, 1, 0, 0, "sum", "w_avg", mse_weight=0.0,
                      perceptual_factor=1.0, perceptual_size=256, perceptual_distance="lpips",
                      alphas="fixed", latent_space="w", optimize_noise=None, lr_rampup=0.05,
                      lr_rampdown=0.25, latent_noise=0.05, latent_noise_ramp=0.75)
    raise InputError(f"recipe {name!r} is unknown; recipes: {', '.join(RECIPES)}",
                     field="recipe")
