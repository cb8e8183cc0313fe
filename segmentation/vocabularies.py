"""Label vocabularies: class names in label-map order, with display colours.

A label map value ``k`` means ``vocabulary.names[k]``. A segmenter's output channels must match
its vocabulary one to one; :func:`get_vocabulary` lists the known ones when a name is wrong.
"""

from __future__ import annotations

import colorsys
from dataclasses import dataclass

import numpy as np

from mganprior.core.errors import InputError


def class_key(name: str) -> str:
    """How class names are compared: case and surrounding spaces do not count."""
    return name.strip().casefold()


@dataclass(frozen=True)
class Vocabulary:
    """Class names (label ``k`` is ``names[k]``) and one RGB colour per class for figures."""

    name: str
    names: tuple[str, ...]
    colors: tuple[tuple[int, int, int], ...]

    def __post_init__(self) -> None:
        if len(self.names) != len(self.colors):
            raise InputError(f"vocabulary {self.name}: {len(self.names)} names but "
                             f"{len(self.colors)} colours")
        seen: dict[str, int] = {}
        for k, name in enumerate(self.names):
            first = seen.setdefault(class_key(name), k)
            if first != k:
                raise InputError(f"vocabulary {self.name} repeats class {name.strip()!r} (ids "
                                 f"{first} and {k}, compared without case and surrounding "
                                 "spaces)")

    def __len__(self) -> int:
        return len(self.names)

    def index(self, name: str) -> int:
        """The id of class ``name``, matched without regard to case and surrounding spaces
        (hub configs name ADE20K's classes ``"bed "``)."""
        key = class_key(name)
        for k, candidate in enumerate(self.names):
            if class_key(candidate) == key:
                return k
        raise InputError(f"class {name!r} is not in vocabulary {self.name}; classes: "
                         f"{', '.join(self.names)}")

    def colorize(self, labels: np.ndarray) -> np.ndarray:
        """Label map [H, W] (ints) -> RGB uint8 [H, W, 3] in the vocabulary's colours."""
        palette = np.asarray(self.colors, dtype=np.uint8)
        return palette[np.clip(labels, 0, len(self) - 1)]


def spread_colors(count: int) -> tuple[tuple[int, int, int], ...]:
    """Distinct colours for long vocabularies: golden-ratio hues, alternating brightness."""
    colors = []
    for k in range(count):
        hue = (k * 0.618033988749895) % 1.0
        r, g, b = colorsys.hsv_to_rgb(hue, 0.65, 0.95 if k % 2 else 0.7)
        colors.append((round(r * 255), round(g * 255), round(b * 255)))
    return tuple(colors)


SCENE_WORLD = Vocabulary(
    "scene-world",
    ("wall", "floor", "ceiling", "bed", "pillow", "window", "lamp", "painting", "rug",
     "nightstand", "door", "table", "chair", "screen", "sky", "building", "tower", "roof",
     "tree", "grass", "road"),
    ((120, 120, 80), (80, 50, 50), (120, 120, 120), (204, 5, 255), (255, 184, 184),
     (230, 230, 230), (224, 255, 8), (255, 6, 51), (255, 9, 224), (143, 255, 140),
     (8, 255, 51), (255, 6, 82), (204, 70, 3), (0, 102, 200), (6, 230, 230), (180, 120, 120),
     (255, 184, 6), (20, 200, 150), (4, 200, 3), (4, 250, 7), (140, 140, 140)),
)

ADE20K_150_NAMES = (
    "wall", "building", "sky", "floor", "tree", "ceiling", "road", "bed", "windowpane", "grass",
    "cabinet", "sidewalk", "person", "earth", "door", "table", "mountain", "plant", "curtain",
    "chair", "car", "water", "painting", "sofa", "shelf", "house", "sea", "mirror", "rug",
    "field", "armchair", "seat", "fence", "desk", "rock", "wardrobe", "lamp", "bathtub",
    "railing", "cushion", "base", "box", "column", "signboard", "chest of drawers", "counter",
    "sand", "sink", "skyscraper", "fireplace", "refrigerator", "grandstand", "path", "stairs",
    "runway", "case", "pool table", "pillow", "screen door", "stairway", "river", "bridge",
    "bookcase", "blind", "coffee table", "toilet", "flower", "book", "hill", "bench",
    "countertop", "stove", "palm", "kitchen island", "computer", "swivel chair", "boat", "bar",
    "arcade machine", "hovel", "bus", "towel", "light", "truck", "tower", "chandelier", "awning",
    "streetlight", "booth", "television receiver", "airplane", "dirt track", "apparel", "pole",
    "land", "bannister", "escalator", "ottoman", "bottle", "buffet", "poster", "stage", "van",
    "ship", "fountain", "conveyer belt", "canopy", "washer", "plaything", "swimming pool",
    "stool", "barrel", "basket", "waterfall", "tent", "bag", "minibike", "cradle", "oven",
    "ball", "food", "step", "tank", "trade name", "microwave", "pot", "animal", "bicycle",
    "lake", "dishwasher", "screen", "blanket", "sculpture", "hood", "sconce", "vase",
    "traffic light", "tray", "ashcan", "fan", "pier", "crt screen", "plate", "monitor",
    "bulletin board", "shower", "radiator", "glass", "clock", "flag",
)
ADE20K_150 = Vocabulary("ade20k-150", ADE20K_150_NAMES, spread_colors(len(ADE20K_150_NAMES)))

CELEBAMASK_HQ_19_NAMES = (
    "background", "skin", "nose", "eye_g", "l_eye", "r_eye", "l_brow", "r_brow", "l_ear",
    "r_ear", "mouth", "u_lip", "l_lip", "hair", "hat", "ear_r", "neck_l", "neck", "cloth",
)
CELEBAMASK_HQ_19 = Vocabulary("celebamask-hq-19", CELEBAMASK_HQ_19_NAMES,
                              spread_colors(len(CELEBAMASK_HQ_19_NAMES)))

VOCABULARIES: dict[str, Vocabulary] = {
    v.name: v for v in (SCENE_WORLD, ADE20K_150, CELEBAMASK_HQ_19)
}


def get_vocabulary(name: str) -> Vocabulary:
    if name not in VOCABULARIES:
        raise InputError(f"unknown vocabulary {name!r}; known vocabularies: "
                         f"{', '.join(VOCABULARIES)} (or give a JSON list of class names)")
    return VOCABULARIES[name]
