"""Copy trained scene-world models from a training folder into ``scenes/weights/``.

    python -m scenes.publish runs/scene-models

Generators become ``scenes/weights/{name}.safetensors`` (+ ``.json`` with a ``training`` record);
the segmenter's ``save_pretrained`` folder becomes ``scenes/weights/scenes-segmenter64/``.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from core.errors import InputError

WEIGHTS = Path(__file__).resolve().parent / "weights"
GENERATOR_NAMES = {"bedroom": "bedroom-pggan64", "conference_room": "conference-pggan64",
                   "church_outdoor": "church-pggan64"}
SEGMENTER_NAME = "scenes-segmenter64"
SEGMENTER_RUN = "segmenter-finetune2"  # the last stage of scenes/train_models.sh


def publish(source: Path, target: Path = WEIGHTS, segmenter_run: str = SEGMENTER_RUN,
            ) -> list[Path]:
    target.mkdir(parents=True, exist_ok=True)
    written = []
    for domain, name in GENERATOR_NAMES.items():
        folder = source / domain
        weights = folder / "generator.safetensors"
        if not weights.is_file():
            raise InputError(f"{weights} is missing; train it first (scenes/train_models.sh)")
        config = json.loads((folder / "generator.json").read_text())
        state = folder / "training.json"
        if state.is_file():
            training = json.loads(state.read_text())
            config["training"] = {"domain": domain, "steps": training["steps"],
                                  "seconds": training["seconds"], "device": training["device"],
                                  "settings": training["config"]}
        shutil.copyfile(weights, target / f"{name}.safetensors")
        (target / f"{name}.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
        written += [target / f"{name}.safetensors", target / f"{name}.json"]
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
    parser.add_argument("source", type=Path, help="the OUT folder of scenes/train_models.sh")
    parser.add_argument("--segmenter-run", default=SEGMENTER_RUN,
                        help=f"which segmenter stage to publish (default {SEGMENTER_RUN})")
    args = parser.parse_args()
    for path in publish(args.source, segmenter_run=args.segmenter_run):
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
