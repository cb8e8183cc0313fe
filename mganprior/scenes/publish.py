"""Copy trained scene-world models from a training folder into ``mganprior/scenes/weights/``.

    python -m mganprior.scenes.publish runs/scene-models   # the PGGANs and the segmenter
    python -m mganprior.scenes.publish --generator runs/sg2-bedroom bedroom-stylegan2-64

Generators become ``mganprior/scenes/weights/{name}.safetensors`` (+ ``.json`` with a
``training`` record); the segmenter's ``save_pretrained`` folder becomes
``mganprior/scenes/weights/scenes-segmenter64/``.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from mganprior.core.errors import InputError

WEIGHTS = Path(__file__).resolve().parent / "weights"
GENERATOR_NAMES = {"bedroom": "bedroom-pggan64", "conference_room": "conference-pggan64",
                   "church_outdoor": "church-pggan64"}
SEGMENTER_NAME = "scenes-segmenter64"
SEGMENTER_RUN = "segmenter-finetune2"  # the last stage of mganprior/scenes/train_models.sh


STYLEGAN2_NAMES = {"bedroom": "bedroom-stylegan2-64"}
# every published generator's domain, by name
GENERATOR_DOMAINS = {name: domain for names in (GENERATOR_NAMES, STYLEGAN2_NAMES)
                     for domain, name in names.items()}


def publish_generator(folder: Path, name: str, target: Path = WEIGHTS) -> list[Path]:
    """``folder``'s generator (and its ``training.json`` as a ``training`` record) as ``name``."""
    if name not in GENERATOR_DOMAINS:
        raise InputError(f"unknown scene generator {name!r}; known: "
                         f"{', '.join(GENERATOR_DOMAINS)}")
    weights = folder / "generator.safetensors"
    if not weights.is_file():
        raise InputError(f"{weights} is missing; train it first (mganprior/scenes/train_models.sh)")
    config = json.loads((folder / "generator.json").read_text())
    state = folder / "training.json"
    if state.is_file():
        training = json.loads(state.read_text())
        config["training"] = {"domain": GENERATOR_DOMAINS[name], "steps": training["steps"],
                              "seconds": training["seconds"], "device": training["device"],
                              "settings": training["config"]}
    target.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(weights, target / f"{name}.safetensors")
    (target / f"{name}.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    return [target / f"{name}.safetensors", target / f"{name}.json"]


def publish(source: Path, target: Path = WEIGHTS, segmenter_run: str = SEGMENTER_RUN,
            ) -> list[Path]:
    """The three PGGANs (``source/DOMAIN``) and the segmenter of
    ``mganprior/scenes/train_models.sh``."""
    written = []
    for domain, name in GENERATOR_NAMES.items():
        written += publish_generator(source / domain, name, target)
    model = source / segmenter_run / "model"
    if not (model / "model.safetensors").is_file():
        raise InputError(f"{model / 'model.safetensors'} is missing; train the segmenter first")
    destination = target / SEGMENTER_NAME
    shutil.rmtree(destination, ignore_errors=True)
    shutil.copytree(model, destination, ignore=shutil.ignore_patterns("README.md"))
    written.append(destination)
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path, nargs="?",
                        help="the OUT folder of mganprior/scenes/train_models.sh")
    parser.add_argument("--segmenter-run", default=SEGMENTER_RUN,
                        help=f"which segmenter stage to publish (default {SEGMENTER_RUN})")
    parser.add_argument("--generator", nargs=2, metavar=("FOLDER", "NAME"),
                        help="publish one trained generator folder under NAME")
    args = parser.parse_args()
    if (args.source is None) == (args.generator is None):
        parser.error("give either SOURCE or --generator FOLDER NAME")
    written = (publish_generator(Path(args.generator[0]), args.generator[1]) if args.generator
               else publish(args.source, segmenter_run=args.segmenter_run))
    for path in written:
        print(f"wrote {path}")

if __name__ == "__main__":
    main()
