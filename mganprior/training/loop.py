"""The resumable step loop shared by the trainers (``training.gan``, ``training.segmenter``):
progress bar, sparse loss log, periodic checkpoints, a checkpoint on Ctrl-C, and checkpoint files
that hold only tensors and plain data, read back with ``weights_only=True``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from mganprior.core.errors import InputError
from mganprior.core.files import atomic_path
from mganprior.core.progress import progress_bar
from mganprior.core.weights import read_torch_checkpoint


@dataclass
class LoopState:
    """Where a training run stands; saved in and restored from its checkpoint."""

    step: int = 0
    seconds: float = 0.0
    log: list[dict[str, float]] = field(default_factory=list)


def save_state(path: Path, payload: dict[str, Any]) -> None:
    """``torch.save`` through a temporary file and a rename: a crash never leaves half a file.
    ``payload`` must hold only tensors, numbers, strings, lists, tuples and dicts."""
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def load_state(path: Path, keys: tuple[str, ...]) -> dict[str, Any]:
    """A training checkpoint, read with ``weights_only=True`` (a file that needs anything else to
    load is refused, so a training folder from someone else cannot run code); ``keys`` must be
    present."""
    state = read_torch_checkpoint(path)
    missing = [key for key in keys if key not in state]
    if missing:
        raise InputError(f"training checkpoint {path} lacks {', '.join(missing)}; it was not "
                         "written by this trainer (remove it to start over)")
    return state


DEFAULT_CHECKPOINT_EVERY = 500  # steps between checkpoints


def check_checkpoint_every(value: int) -> None:
    if not isinstance(value, int) or value < 1:
        raise InputError(f"checkpoint_every must be a positive integer, got {value}",
                         field="checkpoint_every")


def run_steps(state: LoopState, iterations: int,
              train_step: Callable[[int], Mapping[str, torch.Tensor | float]],
              checkpoint: Callable[[], None], *, checkpoint_every: int, desc: str,
              progress: bool = True, log_every: int = 50,
              on_log: Callable[[int, dict[str, float]], None] | None = None) -> None:
    """Call ``train_step(step)`` until ``state.step == iterations``, checkpointing on the way.

    ``train_step`` returns its losses (tensors are read only every ``log_every`` steps, so the
    loop does not wait for the device each step). ``checkpoint`` runs every
    ``checkpoint_every`` steps, on KeyboardInterrupt (then re-raised) and at the end.
    """
    bar = progress_bar(total=iterations, initial=state.step, enabled=progress, unit="it",
                       desc=desc,
               dynamic_ncols=True)
    started = time.perf_counter() - state.seconds
    try:
        while state.step < iterations:
            values = train_step(state.step)
            state.step += 1
            state.seconds = time.perf_counter() - started
            if state.step % log_every == 0 or state.step == iterations:
                entry = {"step": state.step, **{k: float(v) for k, v in values.items()},
                         "seconds": round(state.seconds, 2)}
                state.log.append(entry)
                bar.set_postfix({k: f"{entry[k]:.3f}" for k in values})
                if on_log is not None:
                    on_log(state.step, entry)
            bar.update(1)
            if state.step % checkpoint_every == 0 and state.step < iterations:
                checkpoint()
    except KeyboardInterrupt:
        checkpoint()
        raise
    finally:
        bar.close()
    checkpoint()
