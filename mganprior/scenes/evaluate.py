"""Quality figures of the scene-world models, for the model cards in ``docs/models.md``.

    python -m mganprior.scenes.evaluate [--samples 500] [--only NAME ...]

Generators: Frechet Segmentation Distance (FSD, via the scene segmenter) of trained samples and of
the untrained initialisation against held-out renders, with the FSD between two disjoint sets of
renders as the noise floor, and between the samples of two generators of the same domain (PGGAN
against StyleGAN2); and a nearest-neighbour copy check (pixel L2 from each sample to its
closest training render, against the same distance for held-out renders).

Segmenter: per-class IoU on held-out renders (exact labels), and on generated samples, which have
no ground truth, agreement with the labels of each sample's nearest training render. That
reference is noisy, so the same procedure is run on held-out renders to calibrate it.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from inversion.generators import load_generator_file
from mganprior.core.pixels import from_uint8, to_uint8
from mganprior.scenes.datasets import HELD_OUT_SEED, rendered_dataset
from mganprior.scenes.figures import image_rows_figure
from mganprior.scenes.publish import GENERATOR_DOMAINS, GENERATOR_NAMES, SEGMENTER_NAME, WEIGHTS
from mganprior.training.gan import image_grid, train_config_from_dict
from segmentation.metrics import confusion_matrix, frechet_segmentation_distance, iou_report
from segmentation.segmenters import load_smp_segmenter
from segmentation.vocabularies import SCENE_WORLD


def _samples(generator: torch.nn.Module, count: int, seed: int) -> np.ndarray:
    z = torch.randn(count, generator.z_dim, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return np.concatenate([to_uint8(generator(chunk)) for chunk in z.split(100)])


def nearest(queries: np.ndarray, bank: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Index of and RMS pixel distance (0-255 scale) to each query's nearest bank image."""
    q = torch.from_numpy(queries.reshape(len(queries), -1)).float()
    b = torch.from_numpy(bank.reshape(len(bank), -1)).float()
    best_d, best_i = [], []
    for chunk in q.split(64):
        d = torch.cdist(chunk, b)
        value, index = d.min(dim=1)
        best_d.append(value)
        best_i.append(index)
    dims = q.shape[1]
    return torch.cat(best_i).numpy(), (torch.cat(best_d) / dims ** 0.5).numpy()


def _miou(predicted: torch.Tensor, target: torch.Tensor) -> float:
    return iou_report(confusion_matrix(predicted, target, len(SCENE_WORLD)),
                      SCENE_WORLD.names).mean


def untrained_generator(training: dict) -> torch.nn.Module:
    """The initial weights the trainer started from (same config, same seed)."""
    config = train_config_from_dict(training["settings"])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        return config.build()[0].eval()


def evaluate_generator(name: str, segmenter, samples: int, train_images: int,
                       cache: Path | None, images_dir: Path, weights: Path = WEIGHTS) -> dict:
    domain = GENERATOR_DOMAINS[name]
    generator = load_generator_file(weights / f"{name}.safetensors").eval()
    train, train_labels = rendered_dataset(domain, train_images, 64, cache=cache, progress=False)
    held, held_labels = rendered_dataset(domain, 2 * samples, 64, start=HELD_OUT_SEED,
                                         cache=cache, progress=False)
    training = json.loads((weights / f"{name}.json").read_text()).get("training", {})
    fake = _samples(generator, samples, seed=1)
    untrained = _samples(untrained_generator(training), samples, seed=1)
    maps = {key: segmenter.segment(from_uint8(x)) for key, x in
            (("fake", fake), ("init", untrained), ("held_a", held[:samples]),
             ("held_b", held[samples:]))}
    k = len(SCENE_WORLD)
    fsd = {"trained": frechet_segmentation_distance(maps["fake"], maps["held_a"], k),
           "untrained": frechet_segmentation_distance(maps["init"], maps["held_a"], k),
           "renders_vs_renders": frechet_segmentation_distance(maps["held_b"], maps["held_a"], k)}
    for other, other_domain in GENERATOR_DOMAINS.items():
        if other != name and other_domain == domain and (weights / f"{other}.json").is_file():
            other_maps = segmenter.segment(from_uint8(_samples(
                load_generator_file(weights / f"{other}.safetensors").eval(), samples, seed=1)))
            fsd[f"samples_vs_{other}"] = frechet_segmentation_distance(maps["fake"], other_maps,
                                                                        k)
    check = min(200, samples)  # samples searched against every training render
    fake_nn, fake_dist = nearest(fake[:check], train)
    held_nn, held_dist = nearest(held[:check], train)
    transfer_fake = torch.from_numpy(train_labels[fake_nn].astype(np.int64))
    transfer_held = torch.from_numpy(train_labels[held_nn].astype(np.int64))
    agreement = {
        "generated_vs_nn_labels": _miou(maps["fake"][:check], transfer_fake),
        "renders_vs_nn_labels": _miou(maps["held_a"][:check], transfer_held),
        "renders_exact_vs_nn_labels": _miou(
            torch.from_numpy(held_labels[:check].astype(np.int64)), transfer_held),
    }
    present = {SCENE_WORLD.names[c]: round(float((maps["fake"] == c).float().mean()), 4)
               for c in range(k) if (maps["fake"] == c).any()}
    Image.fromarray(image_grid(fake[:64], 16)).save(images_dir / f"{name}-samples.png")
    order = np.argsort(fake_dist)[:8]
    fig = image_rows_figure(
        [("sample", list(fake[order])),
         ("nearest\ntraining\nrender", list(train[fake_nn[order]])),
         ("segmented", [m.numpy() for m in maps["fake"][order]])],
        vocabulary=SCENE_WORLD,
        title=f"{name}: the 8 samples closest to a training render (of {check})")
    fig.savefig(images_dir / f"{name}-nearest.png", dpi=110)
    return {
        "domain": domain, "training": training,
        "fsd": {key: round(v, 2) for key, v in fsd.items()},
        "nearest_neighbour_rms": {
            "generated_median": round(float(np.median(fake_dist)), 2),
            "generated_min": round(float(fake_dist.min()), 2),
            "held_out_renders_median": round(float(np.median(held_dist)), 2),
            "held_out_renders_min": round(float(held_dist.min()), 2)},
        "segmenter_agreement_miou": {key: round(v, 4) for key, v in agreement.items()},
        "generated_class_fractions": present,
    }


def evaluate_segmenter(segmenter, samples: int, cache: Path | None, images_dir: Path) -> dict:
    held_all, held_labels_all = [], []
    for domain in GENERATOR_NAMES:
        held, held_labels = rendered_dataset(domain, 2 * samples, 64, start=HELD_OUT_SEED,
                                             cache=cache, progress=False)
        held_all.append(held[:300])
        held_labels_all.append(held_labels[:300])
    held = np.concatenate(held_all)
    held_labels = torch.from_numpy(np.concatenate(held_labels_all).astype(np.int64))
    predicted = segmenter.segment(from_uint8(held))
    iou = iou_report(confusion_matrix(predicted, held_labels, len(SCENE_WORLD)),
                     SCENE_WORLD.names)
    per_domain = len(held_all[0])
    pick = [d * per_domain + i for d in range(len(held_all)) for i in range(3)]
    fig = image_rows_figure([("render", list(held[pick])),
                             ("exact labels", [held_labels[i].numpy() for i in pick]),
                             ("segmenter", [predicted[i].numpy() for i in pick])],
                            vocabulary=SCENE_WORLD, title=f"{SEGMENTER_NAME} on held-out renders")
    fig.savefig(images_dir / f"{SEGMENTER_NAME}-held-out.png", dpi=110)
    return {"held_out_images": len(held), "mean_iou": round(iou.mean, 4),
            "pixel_accuracy": round(iou.pixel_accuracy, 4), "per_class_iou": iou.as_dict()}


def evaluate(samples: int, train_images: int, docs: Path, cache: Path | None,
             weights: Path = WEIGHTS, only: list[str] | None = None,
             previous: dict | None = None) -> dict:
    """Every published model (or only the generators named), merged into ``previous``."""
    images_dir = docs / "images" / "models"
    images_dir.mkdir(parents=True, exist_ok=True)
    segmenter = load_smp_segmenter(weights / SEGMENTER_NAME, device="cpu")
    report: dict = previous or {"samples": samples, "generators": {}}
    if report.get("samples") != samples:
        raise ValueError(f"the previous report used {report.get('samples')} samples, not "
                         f"{samples}; evaluate every model again (no --only)")
    names = only or [name for name in GENERATOR_DOMAINS if (weights / f"{name}.json").is_file()]
    for name in names:
        report["generators"][name] = evaluate_generator(name, segmenter, samples, train_images,
                                                        cache, images_dir, weights)
    if not only:
        report["segmenter"] = evaluate_segmenter(segmenter, samples, cache, images_dir)
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=500)
    parser.add_argument("--train-images", type=int, default=10000,
                        help="training renders to search for nearest neighbours")
    parser.add_argument("--docs", type=Path, default=Path("docs"))
    parser.add_argument("--cache", type=Path, default=Path("runs/scene-models/cache"))
    parser.add_argument("--out", type=Path,
                        default=Path("mganprior/scenes/weights/evaluation.json"))
    parser.add_argument("--only", nargs="+", choices=sorted(GENERATOR_DOMAINS),
                        help="evaluate only these generators, keeping the rest of --out")
    args = parser.parse_args()
    previous = json.loads(args.out.read_text()) if args.only and args.out.is_file() else None
    report = evaluate(args.samples, args.train_images, args.docs, args.cache, only=args.only,
                      previous=previous)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
