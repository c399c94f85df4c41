"""Local folders a writer works in, and how the next writer tells a dead one's from a live one's.

A publish or a download builds its output in a folder of its own beside the
destination (`<name>.tmp-<id>`), and moves an old copy aside
(`<name>.old-<id>`) before removing it. A process killed half way (SIGKILL,
the OOM killer, a pre-empted node) leaves such folders behind, often full
size. The writer therefore holds an exclusive `flock` on its folder for as
long as it works in it (:func:`claim_new_dir`); the kernel drops the lock
when the process dies, however it dies. So a folder of that shape whose lock
can be taken belongs to nobody and :func:`prune` removes it at once, while
one whose lock is held is a live writer's and is left alone, whatever its
age. Where the file system refuses locks (some network mounts), age decides
instead: older than `stale_after_s`.

Taking the lock and checking that the folder is still the one just made
closes the gap between `mkdir` and `flock`: a pruner that removed the empty
folder in between makes the writer start over under a new name.

:func:`file_lock` serialises processes around one cached copy (see
`cache.py`), so they download it once between them instead of once each,
and around one output being computed (`pit.artifacts.computing`).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

from pit.storage.manifest import LEFTOVER

log = logging.getLogger(__name__)

_NO_LOCKS = frozenset({errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL})
_CLAIM_TRIES = 5


class Claim:
    """A folder this process works in, locked until :meth:`release` (or the process ends)."""

    def __init__(self, path: Path, fd: int | None) -> None:
        self.path = path
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> Claim:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _try_lock(fd: int) -> bool | None:
    """Take an exclusive lock without waiting: True, False when held, None when unsupported."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    except OSError as e:
        if e.errno in _NO_LOCKS:
            return None
        raise


def claim_new_dir(parent: Path, prefix: str) -> Claim:
    """A new, empty folder `parent/<prefix><id>`, locked by this process."""
    parent.mkdir(parents=True, exist_ok=True)
    for _ in range(_CLAIM_TRIES):
        path = parent / f"{prefix}{uuid.uuid4().hex[:12]}"
        path.mkdir()
        try:
            fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        except FileNotFoundError:
            continue
        locked = _try_lock(fd)
        if locked is None:
            return Claim(path, fd)
        try:
            still_there = locked and os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            still_there = False
        if still_there:
            return Claim(path, fd)
        os.close(fd)
    raise OSError(f"could not claim a working folder in {parent}: other processes kept removing it")


@contextlib.contextmanager
def file_lock(path: Path, waiting: str | None = None) -> Iterator[None]:
    """Hold an exclusive lock on `path` (made if absent; never removed, so never raced).

    `waiting`, if given, is logged when another process holds the lock, so a
    process that waits says what for.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            if _try_lock(fd) is False:
                if waiting:
                    log.info("%s (lock %s)", waiting, path)
                fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError as e:
            if e.errno not in _NO_LOCKS:
                raise
            log.debug("no file locks on %s; going on without one", path)
        yield
    finally:
        os.close(fd)


def is_leftover_name(name: str) -> bool:
    """Whether a name is one a writer gives its working or set-aside folders (`*.tmp-<id>`)."""
    return bool(LEFTOVER.search(name))


def prune(parent: Path, *, prefix: str = "", stale_after_s: float = 3600.0) -> list[Path]:
    """Remove what dead writers left in `parent` (names starting with `prefix`); returns them.

    A folder is removed when its lock can be taken (see the module docstring),
    a stray temporary file once it is older than `stale_after_s`.
    """
    removed: list[Path] = []
    try:
        entries = list(parent.iterdir())
    except FileNotFoundError:
        return removed
    now = time.time()
    for path in entries:
        if not path.name.startswith(prefix) or not is_leftover_name(path.name):
            continue
        try:
            if path.is_dir() and not path.is_symlink():
                if _remove_if_unclaimed(path, now, stale_after_s):
                    removed.append(path)
            elif now - path.lstat().st_mtime > stale_after_s:
                path.unlink()
                removed.append(path)
        except FileNotFoundError:
            continue
    for path in removed:
        log.info("removed %s, left by a writer that is gone", path)
    return removed


def _remove_if_unclaimed(path: Path, now: float, stale_after_s: float) -> bool:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        locked = _try_lock(fd)
        if locked is False:
            return False
        if locked is None and now - os.fstat(fd).st_mtime <= stale_after_s:
            return False
        shutil.rmtree(path, ignore_errors=True)
        return not path.exists()
    finally:
        os.close(fd)
