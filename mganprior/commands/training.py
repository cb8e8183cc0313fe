"""``mganprior train-generator`` and ``mganprior train-segmenter`` on rendered scenes."""

from __future__ import annotations

import argparse
import dataclasses

from mganprior.commands.common import DEVICE_HELP, Command, int_list
from mganprior.core.errors import InputError


def add_training_io(parser: argparse.ArgumentParser) -> None:
    from mganprior.training.loop import DEFAULT_CHECKPOINT_EVERY

    parser.add_argument("--checkpoint-every", type=int, default=DEFAULT_CHECKPOINT_EVERY)
    parser.add_argument("--device", default=None, help=DEVICE_HELP)
    parser.add_argument("--workers", type=int, default=1, help="rendering processes")
    parser.add_argument("--cache", default=None, help="folder to keep rendered datasets in")
    parser.add_argument("--quiet", action="store_true")


def add_generator_arguments(parser: argparse.ArgumentParser) -> None:
    from mganprior.training.gan import ARCHITECTURES

    parser.add_argument("--architecture", default=ARCHITECTURES[0], choices=ARCHITECTURES)
    parser.add_argument("--domain", required=True, help="bedroom, conference_room, church_outdoor")
    parser.add_argument("--out", required=True)
    parser.add_argument("--images", type=int, default=20000, help="rendered training scenes")
    parser.add_argument("--iterations", type=int)
    parser.add_argument("--batch", type=int)
    parser.add_argument("--resolution", type=int)
    parser.add_argument("--z-dim", type=int)
    parser.add_argument("--channels", help="widths from 4 px up to the resolution, comma "
                        "separated")
    parser.add_argument("--lr", type=float)
    parser.add_argument("--r1-gamma", type=float)
    parser.add_argument("--r1-every", type=int, help="lazy R1: penalty every N steps")
    parser.add_argument("--ema-half-life", type=float,
                        help="EMA half-life of the generator weights, in images")
    parser.add_argument("--w-dim", type=int, help="StyleGAN2: size of w")
    parser.add_argument("--mapping-layers", type=int, help="StyleGAN2: layers of the mapping")
    parser.add_argument("--mixing-prob", type=float, help="StyleGAN2: style-mixing probability")
    parser.add_argument("--pl-weight", type=float,
                        help="StyleGAN2: path-length regularisation weight (0: off)")
    parser.add_argument("--seed", type=int)
    add_training_io(parser)


def train_generator(args: argparse.Namespace) -> int:
    from mganprior.core.devices import resolve_device
    from mganprior.scenes.render import get_domain
    from mganprior.scenes.train import train_scene_generator
    from mganprior.training.gan import train_config_class

    get_domain(args.domain)
    given = {"resolution": args.resolution, "z_dim": args.z_dim, "iterations": args.iterations,
             "batch": args.batch, "lr": args.lr, "r1_gamma": args.r1_gamma,
             "r1_every": args.r1_every, "ema_half_life_images": args.ema_half_life,
             "seed": args.seed, "channels": int_list(args.channels, "channels")
             if args.channels else None, "w_dim": args.w_dim,
             "mapping_layers": args.mapping_layers, "mixing_prob": args.mixing_prob,
             "pl_weight": args.pl_weight}
    config_class = train_config_class(args.architecture)
    fields = {item.name for item in dataclasses.fields(config_class)}
    unknown = sorted(k for k, v in given.items() if v is not None and k not in fields)
    if unknown:
        raise InputError(f"architecture {args.architecture} takes no {', '.join(unknown)}",
                         field="architecture")
    config = config_class(**{k: v for k, v in given.items() if v is not None})
    result = train_scene_generator(args.domain, args.out, config, images=args.images,
                                   device=resolve_device(args.device), workers=args.workers,
                                   cache=args.cache, checkpoint_every=args.checkpoint_every,
                                   progress=not args.quiet)
    print(f"trained {result.steps} steps in {result.seconds / 60:.1f} min; generator: "
          f"{result.out_dir / 'generator.safetensors'}")
    return 0


def add_segmenter_arguments(parser: argparse.ArgumentParser) -> None:
    from mganprior.training.segmenter import SegmenterTrainConfig

    defaults = SegmenterTrainConfig()
    parser.add_argument("--out", required=True)
    parser.add_argument("--domains", default="all", help="comma-separated domains (default all)")
    parser.add_argument("--images-per-domain", type=int, default=8000)
    parser.add_argument("--validation-per-domain", type=int, default=300)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--architecture", default=defaults.architecture)
    parser.add_argument("--encoder", default=defaults.encoder)
    parser.add_argument("--iterations", type=int, default=defaults.iterations)
    parser.add_argument("--batch", type=int, default=defaults.batch)
    parser.add_argument("--lr", type=float, default=defaults.lr)
    parser.add_argument("--no-augment", action="store_true")
    parser.add_argument("--dice-weight", type=float, default=defaults.dice_weight,
                        help="add this times a multiclass Dice loss to the cross-entropy")
    parser.add_argument("--init-from", default=None,
                        help="start from a saved smp model directory of the same architecture")
    parser.add_argument("--seed", type=int, default=defaults.seed)
    add_training_io(parser)


def train_segmenter(args: argparse.Namespace) -> int:
    from mganprior.core.devices import resolve_device
    from mganprior.scenes.render import DOMAINS
    from mganprior.scenes.train import train_scene_segmenter
    from mganprior.training.segmenter import SegmenterTrainConfig

    domains = list(DOMAINS) if args.domains == "all" else args.domains.split(",")
    config = SegmenterTrainConfig(architecture=args.architecture, encoder=args.encoder,
                                  iterations=args.iterations, batch=args.batch, lr=args.lr,
                                  augment=not args.no_augment, dice_weight=args.dice_weight,
                                  init_from=args.init_from, seed=args.seed)
    result = train_scene_segmenter(args.out, config, domains=domains,
                                   images_per_domain=args.images_per_domain,
                                   validation_per_domain=args.validation_per_domain,
                                   size=args.size, device=resolve_device(args.device),
                                   workers=args.workers, cache=args.cache,
                                   checkpoint_every=args.checkpoint_every,
                                   progress=not args.quiet)
    if result.validation is not None:
        print(f"held-out mean IoU {result.validation.mean:.3f}, pixel accuracy "
              f"{result.validation.pixel_accuracy:.3f}")
    print(f"trained {result.steps} steps in {result.seconds / 60:.1f} min; segmenter: "
          f"{result.out_dir / 'model'}")
    return 0


COMMANDS = {
    "train-generator": Command(
        "train a PGGAN- or StyleGAN2-architecture generator on a scene domain",
        add_generator_arguments, train_generator,
        "Train a generator on rendered scenes. Checkpoints every --checkpoint-every steps; "
        "rerunning the same command resumes. Unset options take the chosen architecture's "
        "defaults (mganprior.training.gan, mganprior.training.stylegan2)."),
    "train-segmenter": Command(
        "train the scene-world segmenter (segmentation-models-pytorch)",
        add_segmenter_arguments, train_segmenter,
        "Train an smp model from scratch on rendered scenes of every domain; writes OUT/model "
        "(save_pretrained) and reports held-out IoU."),
}
