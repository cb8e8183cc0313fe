"""The resumable step loop shared by the trainers (GAN in ``inversion.training``, segmenter in
``segmentation.training``): progress bar, sparse loss log, periodic checkpoints, a checkpoint on
Ctrl-C, and the rule for which settings a resumed run may change.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from inversion.errors import InputError
from inversion.files import atomic_path


@dataclass
class LoopState:
    """Where a training run stands; saved in and restored from its checkpoint."""

    step: int = 0
    seconds: float = 0.0
    log: list[dict[str, float]] = field(default_factory=list)


def check_resumable(saved: Mapping[str, Any], current: Mapping[str, Any], out_dir: Path,
                    what: str, free: tuple[str, ...] = ()) -> None:
    """Refuse to resume a run whose settings differ, naming them; ``free`` settings may change."""
    diffs = [k for k in current if k not in free and saved.get(k) != current[k]]
    if diffs:
        raise InputError(f"{out_dir} holds a {what} with other settings "
                         f"({', '.join(diffs)} differ); use another --out or the same settings")


def save_state(path: Path, payload: dict[str, Any]) -> None:
    """``torch.save`` through a temporary file and a rename: a crash never leaves half a file."""
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


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
    bar = tqdm(total=iterations, initial=state.step, disable=not progress, unit="it", desc=desc,
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
