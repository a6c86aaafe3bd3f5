"""Local files that exist only when complete (hidden part file, fsync, rename), and their fingerprints."""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import hashlib
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import google_crc32c

_PART = ".part-"
# A part file untouched for this long is a dead writer's, even if its pid now belongs to another process
# (pids are reused) or its writer ran on another host (a shared disk). A live writer touches it every second.
STALE_PART_SECONDS = 3600
S3_PART_BYTES = 8 << 20  # the S3 mirror's multipart part size, which its ETag depends on


def _part_prefix(path: Path) -> str:
    return f".{path.name}{_PART}"


def _host() -> str:
    return socket.gethostname().replace("-", "_")


def writer_tag() -> str:
    """host-pid-random: who writes a part file, so others can tell whether that writer still runs."""
    return f"{_host()}-{os.getpid()}-{os.urandom(4).hex()}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def is_stale(part: Path, tag: str, max_age: float = STALE_PART_SECONDS) -> bool:
    """A part is stale when its writer, on this host, is dead, or when nobody has written it for `max_age`."""
    host, _, rest = tag.partition("-")
    pid_text = rest.split("-", 1)[0]
    if host == _host() and pid_text.isdigit() and not _pid_alive(int(pid_text)):
        return True
    try:
        return time.time() - part.stat().st_mtime > max_age
    except FileNotFoundError:
        return False


def remove_stale_parts(path: Path) -> list[Path]:
    """Delete part files of `path` left by writers that died (killed, power cut)."""
    removed = []
    if not path.parent.is_dir():
        return removed
    prefix = _part_prefix(path)
    for part in path.parent.iterdir():
        if part.name.startswith(prefix) and is_stale(part, part.name[len(prefix) :]):
            part.unlink(missing_ok=True)
            removed.append(part)
    return removed


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a part path to write; on success it becomes `path` in one rename, else it is deleted."""
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_parts(path)
    part = path.parent / f"{_part_prefix(path)}{writer_tag()}"
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


@dataclasses.dataclass(frozen=True)
class Fingerprints:
    """What object stores report about a file's bytes, computed once when the file is written.

    Comparing these with a bucket listing tells whether a mirror holds the same bytes without reading them.
    """

    size: int
    crc32c: str  # base64, as GCS reports it
    s3_etag: str  # as S3 reports it for an upload in S3_PART_BYTES parts (a plain MD5 below that size)
    md5: str = ""  # base64, as Azure's Content-MD5; empty in manifests written before it was recorded


def fingerprints_of(path: Path) -> Fingerprints:
    """One pass over the file: its size, crc32c, S3 multipart ETag and MD5."""
    crc = google_crc32c.Checksum()
    whole = hashlib.md5()
    part_md5s = []
    with open(path, "rb") as source:
        while chunk := source.read(S3_PART_BYTES):
            crc.update(chunk)
            whole.update(chunk)
            part_md5s.append(hashlib.md5(chunk).digest())
    if len(part_md5s) <= 1:
        etag = (part_md5s[0] if part_md5s else hashlib.md5(b"").digest()).hex()
    else:
        etag = f"{hashlib.md5(b''.join(part_md5s)).hexdigest()}-{len(part_md5s)}"
    return Fingerprints(
        size=path.stat().st_size,
        crc32c=base64.b64encode(crc.digest()).decode(),
        s3_etag=etag,
        md5=base64.b64encode(whole.digest()).decode(),
    )
