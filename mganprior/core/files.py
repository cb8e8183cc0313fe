"""Atomic writes: write beside the target under a hidden temporary name, then rename.

The target's symlinks are followed (the link keeps pointing at the new file), and anything that is
not a regular file (a device such as ``/dev/null``, a FIFO, a directory) is never renamed over: the
write is refused in one line instead. Finished files get the usual ``0666 & ~umask`` mode whatever
the writing library chose for its temporary file. Whole directories are built beside their final
name and swapped in (:func:`building_dir`); a builder that was killed leaves a folder that the next
builder removes.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import stat
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar, TypeVar

from mganprior.core.errors import InputError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def describe_missing(path: str | Path) -> str:
    """What a path that is not a readable regular file is, in a few words: ``does not exist``,
    ``is a symlink loop``, ``is a FIFO``, ``is a device``, ``is a directory``..."""
    path = Path(path)
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return "is a broken symlink" if path.is_symlink() else "does not exist"
    except OSError as err:
        if err.errno == 40:  # ELOOP
            return "is a symlink loop"
        return f"cannot be read ({err.strerror})"
    if stat.S_ISDIR(mode):
        return "is a directory"
    if stat.S_ISFIFO(mode):
        return "is a FIFO (named pipe), not a file"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "is a device, not a file"
    if stat.S_ISSOCK(mode):
        return "is a socket, not a file"
    return "is not a regular file"


def writable_target(path: str | Path) -> Path:
    """Where a write to ``path`` must land: symlinks resolved; a non-regular file is refused."""
    path = Path(path)
    target = Path(os.path.realpath(path)) if path.is_symlink() else path
    try:
        mode = os.stat(target).st_mode
    except FileNotFoundError:
        return target
    except OSError as err:
        raise InputError(f"{path} cannot be written ({err.strerror})") from None
    if not stat.S_ISREG(mode):
        kind = "a directory" if stat.S_ISDIR(mode) else "a device, FIFO or socket"
        raise InputError(f"{path} is {kind}, not a regular file; refusing to replace it "
                         "(give a file path)")
    return target


@contextlib.contextmanager
def atomic_path(path: str | Path, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path to write; on success it replaces ``path``, on error it is removed.

    ``suffix`` keeps a file extension for writers that pick the format from it (PIL).
    """
    target = writable_target(path)
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}{suffix}")
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


@contextlib.contextmanager
def building_dir(final: str | Path) -> Iterator[Path]:
    """Yield a fresh directory beside ``final``; on success it replaces ``final`` whole.

    The directory is ``.NAME.partial-PID-RANDOM`` and holds a ``.building`` file locked (flock)
    while its builder runs, so partial folders of builders that died (their lock is gone) are
    removed by the next builder, and live ones are left alone.
    """
    final = Path(final)
    if final.exists() and not final.is_dir():
        raise InputError(f"{final} exists and is not a directory")
    final.parent.mkdir(parents=True, exist_ok=True)
    for stale in final.parent.glob(f".{final.name}.partial-*"):
        _remove_if_abandoned(stale)
    partial = final.with_name(f".{final.name}.partial-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    partial.mkdir()
    fd = os.open(partial / ".building", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield partial
        (partial / ".building").unlink()
        previous = final.with_name(f".{final.name}.previous-{os.getpid()}")
        with _swap_lock(final):  # two builders of one folder swap one after the other
            if final.exists():
                os.replace(final, previous)
            os.replace(partial, final)
        shutil.rmtree(previous, ignore_errors=True)
    finally:
        os.close(fd)
        shutil.rmtree(partial, ignore_errors=True)


@contextlib.contextmanager
def _swap_lock(final: Path) -> Iterator[None]:
    locks = final.parent / ".locks"
    locks.mkdir(exist_ok=True)
    fd = os.open(locks / f"{final.name}.swap.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _remove_if_abandoned(partial: Path) -> None:
    marker = partial / ".building"
    try:
        fd = os.open(marker, os.O_RDWR)
    except OSError:  # no marker: its builder died before it got going, or is starting now
        with contextlib.suppress(OSError):
            if time.time() - partial.stat().st_mtime > 60:
                shutil.rmtree(partial, ignore_errors=True)
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return  # a live builder holds it
    finally:
        os.close(fd)
    shutil.rmtree(partial, ignore_errors=True)


_Owned = TypeVar("_Owned", bound="WholeDirectory")


class WholeDirectory:
    """An output directory marked by one file (``MARKER``) and only ever built whole: beside its
    final name, then swapped in (:func:`building_dir`). Subclasses own a layout inside it."""

    MARKER: ClassVar[str]
    HOLDS: ClassVar[str]  # what the directory holds, as messages name it

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def exists(self) -> bool:
        return (self.path / self.MARKER).is_file()

    @classmethod
    def check_target(cls, path: str | Path) -> Path:
        """``path`` if a build may replace it; a file, or a non-empty directory that holds
        something else, is refused in one line. Callers check before long work; building
        checks again."""
        path = Path(path)
        if path.exists() and not path.is_dir():
            raise InputError(f"out {path} exists and is not a directory", field="out")
        if path.is_dir() and any(path.iterdir()) and not cls(path).exists():
            raise InputError(f"out {path} is not empty and holds no {cls.HOLDS} ({cls.MARKER}); "
                             "choose another directory", field="out")
        return path

    @classmethod
    @contextlib.contextmanager
    def building(cls: type[_Owned], path: str | Path) -> Iterator[_Owned]:
        """A fresh directory that replaces ``path`` whole when the block succeeds."""
        with building_dir(cls.check_target(path)) as partial:
            yield cls(partial)
