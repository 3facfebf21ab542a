"""Atomic file writing: a reader never sees a half-written file, even after a kill."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any


@contextlib.contextmanager
def atomic_open(path: str | Path, mode: str = "w") -> Iterator[IO[Any]]:
    """Open a temp file beside ``path``; rename it over ``path`` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        kwargs = {} if "b" in mode else {"encoding": "utf-8", "newline": ""}
        with os.fdopen(fd, mode, **kwargs) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    with atomic_open(path) as fh:
        fh.write(text)


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


def atomic_write_jsonl(path: str | Path, rows: Iterable[dict[str, Any]]) -> int:
    n = 0
    with atomic_open(path) as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
            n += 1
    return n


@contextlib.contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield a temp folder beside ``path``; it replaces ``path`` only if the block succeeds."""
    import shutil

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        yield tmp
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


# ---------------------------------------------------------------------------- outputs: checked, then locked


def check_output_path(path: str | Path, *, folder: bool, setting: str = "output") -> Path:
    """Refuse, before any work, an output that cannot be written: a file where a folder is expected (or the
    reverse), a path under an existing file, or a parent folder this user cannot write to."""
    from distilrank.errors import ConfigError

    p = Path(path).expanduser()
    if folder and p.exists() and not p.is_dir():
        raise ConfigError(f"{setting}={path} is an existing file, not a folder; choose a folder path")
    if not folder and p.is_dir():
        raise ConfigError(f"{setting}={path} is an existing folder; give a file path (e.g. {p / 'out.jsonl'})")
    parent = p if folder and p.is_dir() else p.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise ConfigError(f"{setting}={path} lies under {parent}, which is a file; choose a path in a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ConfigError(f"{setting}={path}: cannot write in {parent} (permission denied); choose a writable path")
    return p


def lock_path(path: str | Path) -> Path:
    """The lock file of an output: ``<output>.lock`` beside it."""
    p = Path(path).expanduser()
    return p.with_name(p.name + ".lock")


@contextlib.contextmanager
def output_lock(path: str | Path, setting: str = "output") -> Iterator[Path]:
    """Hold an exclusive lock on ``path`` (a file or folder being written) for the block.

    The lock is ``flock`` on ``<path>.lock``: the system releases it when the process exits or is killed,
    so a stale lock never blocks the next run. A second job on the same output stops at once with a
    :class:`~distilrank.errors.ConfigError`. A non-main process of a distributed launch does not lock (the
    main process holds the lock for all). The lock file is removed on release.
    """
    from distilrank.errors import ConfigError

    if any(os.environ.get(var, "0") not in ("", "0") for var in ("RANK", "LOCAL_RANK")):
        yield lock_path(path)
        return
    try:
        import fcntl
    except ImportError:  # not POSIX (Windows): no flock; run unlocked
        yield lock_path(path)
        return
    lock = lock_path(path)
    made = [p for p in lock.parents if not p.exists()]  # removed again on release if the job left them empty
    lock.parent.mkdir(parents=True, exist_ok=True)
    while True:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            owner = lock.read_text(encoding="utf-8", errors="replace").strip() if lock.exists() else "?"
            raise ConfigError(f"{setting}={path} is being written by another distilrank job (process {owner or '?'}, "
                              f"lock {lock}); wait for it to finish, or choose another {setting}") from None
        try:  # the holder before us may have removed the file after we opened it: lock the current one
            same = os.fstat(fd).st_ino == os.stat(lock).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield lock
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(lock)
        os.close(fd)
        for folder in made:  # innermost first: a failed job leaves no empty folders behind
            with contextlib.suppress(OSError):
                folder.rmdir()
