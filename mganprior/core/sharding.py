"""Which share of the work this process does, when many processes split one job.

A job is split by position: with K shards, shard I takes items I, I + K, I + 2K, ... of the
full, sorted list of items (images, or the images of every study cell). The assignment depends
only on the list and on (I, K), never on what is already finished, so reruns after a crash give
every shard the same share again and finish exactly the missing items. Within a share, the run
directory's claims still guard every item, so shards that overlap by mistake never do an item
twice.

Where the share comes from, first match wins:

1. ``torchrun`` (``RANK`` / ``WORLD_SIZE`` / ``LOCAL_RANK``), with a process group (NCCL on
   CUDA, Gloo on the CPU) for the final barrier;
2. a ``--shard I/K`` flag (job arrays, or separate machines sharing a filesystem);
3. SLURM job arrays (``SLURM_ARRAY_TASK_ID`` and ``SLURM_ARRAY_TASK_COUNT``;
   ``SLURM_ARRAY_TASK_MIN`` is subtracted so arrays that start at 1 work);
4. otherwise one shard: everything.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

from mganprior.core.errors import InputError

T = TypeVar("T")


@dataclass(frozen=True)
class Shard:
    index: int
    count: int
    source: str = "single"  # "single", "torchrun", "flag" or "slurm"
    local_rank: int = 0

    def __post_init__(self) -> None:
        if self.count < 1 or not 0 <= self.index < self.count:
            raise InputError(f"shard must be I/K with 0 <= I < K, got {self.index}/{self.count}",
                             field="shard")

    @property
    def leader(self) -> bool:
        """The shard that shows progress and does the final pass (rank 0)."""
        return self.index == 0

    @property
    def distributed(self) -> bool:
        return self.source == "torchrun" and self.count > 1

    def take(self, items: Sequence[T]) -> list[T]:
        """This shard's items: positions ``index``, ``index + count``, ..."""
        return list(items[self.index::self.count])

    def describe(self) -> str:
        return f"shard {self.index}/{self.count} ({self.source})"


def parse_shard(text: str) -> Shard:
    """``I/K`` as a Shard."""
    index, sep, count = text.partition("/")
    try:
        if sep:
            return Shard(int(index), int(count), "flag")
    except ValueError:
        pass
    raise InputError(f"shard must be I/K (e.g. 0/4), got {text!r}", field="shard")


MAX_SHARDS = 1 << 20


def _variable(environ: Mapping[str, str], name: str, default: int | None = None) -> int:
    """An integer environment variable, or one line naming it."""
    text = environ.get(name)
    if text is None and default is not None:
        return default
    try:
        value = int(str(text).strip())
    except ValueError:
        raise InputError(f"environment variable {name} must be an integer, got {text!r}") \
            from None
    if not -MAX_SHARDS <= value <= MAX_SHARDS:
        raise InputError(f"environment variable {name} is out of range: {value}")
    return value


def _shard_from(index: int, count: int, source: str, names: str, local_rank: int = 0) -> Shard:
    if count < 1 or not 0 <= index < count:
        raise InputError(f"{names} give shard {index} of {count}; the index must be in "
                         f"0..{count - 1}")
    return Shard(index, count, source, local_rank)


def current_shard(flag: str | None = None, environ: Mapping[str, str] | None = None) -> Shard:
    """This process's shard: torchrun's ranks, ``--shard I/K``, a SLURM array, or everything.
    A malformed or inconsistent variable is one line naming it."""
    environ = os.environ if environ is None else environ
    if "WORLD_SIZE" in environ and "RANK" in environ:
        count = _variable(environ, "WORLD_SIZE")
        if count > 1:
            missing = [name for name in ("MASTER_ADDR", "MASTER_PORT") if name not in environ]
            if missing:
                raise InputError(f"RANK and WORLD_SIZE are set but {' and '.join(missing)} "
                                 "are not; start the processes with torchrun, or unset RANK "
                                 "and WORLD_SIZE")
        return _shard_from(_variable(environ, "RANK"), count, "torchrun",
                           "RANK and WORLD_SIZE", _variable(environ, "LOCAL_RANK", 0))
    if flag:
        return parse_shard(flag)
    if "SLURM_ARRAY_TASK_ID" in environ and "SLURM_ARRAY_TASK_COUNT" in environ:
        first = _variable(environ, "SLURM_ARRAY_TASK_MIN", 0)
        return _shard_from(_variable(environ, "SLURM_ARRAY_TASK_ID") - first,
                           _variable(environ, "SLURM_ARRAY_TASK_COUNT"), "slurm",
                           "SLURM_ARRAY_TASK_ID, SLURM_ARRAY_TASK_MIN and "
                           "SLURM_ARRAY_TASK_COUNT")
    return Shard(0, 1)


def local_processes(shard: Shard, flag: int | None = None,
                    environ: Mapping[str, str] | None = None) -> int:
    """How many processes of this job share this machine: torchrun's ``LOCAL_WORLD_SIZE``,
    ``--local-processes`` beside ``--shard``, SLURM's ``SLURM_NTASKS_PER_NODE``, else 1."""
    environ = os.environ if environ is None else environ
    if shard.source == "torchrun":
        count = _variable(environ, "LOCAL_WORLD_SIZE", 1)
    elif flag is not None:
        count = flag
    elif "SLURM_NTASKS_PER_NODE" in environ:
        text = environ["SLURM_NTASKS_PER_NODE"].split("(")[0].split(",")[0]  # "2(x3)" -> 2
        count = _variable({"SLURM_NTASKS_PER_NODE": text}, "SLURM_NTASKS_PER_NODE")
    else:
        count = 1
    if count < 1:
        raise InputError(f"local_processes must be at least 1, got {count}",
                         field="local_processes")
    return count


def thread_share(shard: Shard, local_flag: int | None = None, threads: int | None = None,
                 environ: Mapping[str, str] | None = None,
                 cores: int | None = None) -> int | None:
    """The CPU threads this process should use, or None to keep torch's default (one process
    on the machine, or the user's ``OMP_NUM_THREADS``). ``threads`` (``--threads``) wins;
    several local processes split the cores this process may run on. torchrun sets
    ``OMP_NUM_THREADS=1`` for every worker; under torchrun that value is taken as its default,
    not the user's, and replaced by the share."""
    environ = os.environ if environ is None else environ
    if threads is not None:
        if threads < 1:
            raise InputError(f"threads must be at least 1, got {threads}", field="threads")
        return threads
    local = local_processes(shard, local_flag, environ)
    user_threads = environ.get("OMP_NUM_THREADS")
    if local == 1 or (user_threads and not (shard.source == "torchrun" and user_threads == "1")):
        return None
    cores = cores if cores is not None else len(os.sched_getaffinity(0))
    return max(1, cores // local)


RENDEZVOUS_TIMEOUT = "MGANPRIOR_RENDEZVOUS_TIMEOUT"  # seconds to wait for every rank
DEFAULT_RENDEZVOUS_SECONDS = 300


def rendezvous_seconds(environ: Mapping[str, str] | None = None) -> int:
    environ = os.environ if environ is None else environ
    seconds = _variable(environ, RENDEZVOUS_TIMEOUT, DEFAULT_RENDEZVOUS_SECONDS)
    if seconds < 1:
        raise InputError(f"environment variable {RENDEZVOUS_TIMEOUT} must be at least 1 "
                         f"(seconds), got {seconds}")
    return seconds


@contextlib.contextmanager
def signals_end_the_process() -> Iterator[None]:
    """SIGTERM and SIGINT end the process at once inside the block. Python runs its own handlers
    only between bytecodes, so a rank blocked in the rendezvous would otherwise wait for its
    missing peer until the timeout, whatever signal it gets; there is nothing to save yet."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    saved = {signum: signal.getsignal(signum) for signum in (signal.SIGTERM, signal.SIGINT)}
    for signum in saved:
        signal.signal(signum, signal.SIG_DFL)
    try:
        yield
    finally:
        for signum, handler in saved.items():
            signal.signal(signum, handler)


@contextlib.contextmanager
def process_group(shard: Shard) -> Iterator[None]:
    """A torch.distributed process group for a torchrun shard (NCCL on CUDA, Gloo on the CPU),
    destroyed on the way out; nothing for other shards. The rendezvous waits at most
    ``MGANPRIOR_RENDEZVOUS_TIMEOUT`` seconds (300) for every rank, and a signal ends it."""
    from datetime import timedelta

    import torch
    import torch.distributed as dist

    if not shard.distributed or dist.is_initialized():
        yield
        return
    seconds = rendezvous_seconds()
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.set_device(shard.local_rank)
    try:
        with signals_end_the_process():
            dist.init_process_group("nccl" if cuda else "gloo",
                                    timeout=timedelta(seconds=seconds))
    except (RuntimeError, ValueError, OSError) as err:  # DistStoreError is a RuntimeError
        reason = " ".join(str(err).split())[:200]
        raise InputError(f"rank {shard.index} of {shard.count} could not meet the other ranks "
                         f"within {seconds} s ({RENDEZVOUS_TIMEOUT}): {reason}") from None
    try:
        yield
    finally:
        dist.destroy_process_group()


def barrier(shard: Shard) -> None:
    """Wait for every torchrun shard (nothing to wait for otherwise)."""
    import torch.distributed as dist

    if shard.distributed and dist.is_initialized():
        dist.barrier()


def shard_device(shard: Shard, requested: str | None) -> str | None:
    """``cuda:LOCAL_RANK`` for a torchrun shard on a CUDA machine when no device was asked for."""
    import torch

    if requested is None and shard.source == "torchrun" and torch.cuda.is_available():
        return f"cuda:{shard.local_rank}"
    return requested
