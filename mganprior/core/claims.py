"""Claims: which process works on which item, for many processes filling one folder.

A claim on item NAME is an exclusive ``flock`` on ``FOLDER/NAME.lock``, taken without waiting.
The kernel drops it when the holder exits, however it exits (``kill -9`` included), so a
claim can never go stale: a rerun after a crash finds every unfinished item free again. Claims
work between processes on one machine and on network filesystems whose locks reach the server
(NFSv4, Lustre, GPFS).

The rule for users: take the claim, then check that the item is still unfinished (another process
may have finished it since you last looked), do the work, make it durable, then release. A
holder that finds an item finished removes its lock file; no other lock file is ever removed, so
two processes can never hold "the same" claim on two different files.

:func:`locked` is the waiting kind, for short sections (an index append, a table rewrite).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterable, Iterator
from pathlib import Path


class Claims:
    """Exclusive, non-blocking claims on named items, as lock files in ``folder``."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self._held: dict[str, int] = {}

    def _path(self, name: str) -> Path:
        return self.folder / f"{name}.lock"

    def try_claim(self, name: str) -> bool:
        """Claim ``name``; False when another open claim holds it."""
        if name in self._held:
            return True
        self.folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(self._path(name), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self._held[name] = fd
        return True

    def release(self, name: str, finished: bool = False) -> None:
        """Drop the claim; ``finished`` also removes the lock file (the item needs no claim)."""
        fd = self._held.pop(name, None)
        if fd is None:
            return
        if finished:
            self._path(name).unlink(missing_ok=True)
        os.close(fd)  # closing the descriptor releases the lock

    def held_elsewhere(self, name: str) -> bool:
        """Whether some other open claim holds ``name`` right now."""
        if name in self._held or not self._path(name).exists():
            return False
        if self.try_claim(name):
            self.release(name)
            return False
        return True

    def any_held_elsewhere(self) -> bool:
        """Whether another open claim holds any item of this folder right now."""
        if not self.folder.is_dir():
            return False
        return any(self.held_elsewhere(path.stem) for path in self.folder.glob("*.lock"))

    @contextlib.contextmanager
    def hold(self, names: Iterable[str]) -> Iterator[list[str]]:
        """Claim every name that is free; yield those; release them all on the way out."""
        taken = [name for name in names if self.try_claim(name)]
        try:
            yield taken
        finally:
            for name in taken:
                self.release(name)

    def release_all(self) -> None:
        for name in list(self._held):
            self.release(name)


@contextlib.contextmanager
def locked(path: str | Path) -> Iterator[None]:
    """An exclusive ``flock`` on the lock file ``path`` (created with its folder if needed) for
    the block, waiting for it: for short critical sections such as appending to an index."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
