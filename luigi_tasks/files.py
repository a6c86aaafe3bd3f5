"""Local files that exist only when complete: write to a hidden part file, fsync, rename."""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

_PART = ".part-"


def _part_prefix(path: Path) -> str:
    return f".{path.name}{_PART}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_parts(path: Path) -> list[Path]:
    """Delete part files of `path` left by writers that died (killed, power cut).

    A part file carries its writer's pid; one whose writer still runs is left alone.
    """
    removed = []
    if not path.parent.is_dir():
        return removed
    prefix = _part_prefix(path)
    for part in path.parent.iterdir():
        if not part.name.startswith(prefix):
            continue
        pid_text = part.name[len(prefix) :].split("-", 1)[0]
        if pid_text.isdigit() and _pid_alive(int(pid_text)):
            continue
        part.unlink(missing_ok=True)
        removed.append(part)
    return removed


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a part path to write; on success it becomes `path` in one rename, else it is deleted."""
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_parts(path)
    part = path.parent / f"{_part_prefix(path)}{os.getpid()}-{os.urandom(4).hex()}"
    try:
        yield part
        with open(part, "rb+") as written:
            os.fsync(written.fileno())
        os.replace(part, path)
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def sha256_of(path: Path, chunk_bytes: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as source:
        while chunk := source.read(chunk_bytes):
            digest.update(chunk)
    return digest.hexdigest()
