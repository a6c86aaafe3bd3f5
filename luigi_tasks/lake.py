"""The lake: where its files live and how they are listed, read and published, on any storage.

`[lake] root` is a local directory, `gs://bucket/prefix`, `s3://bucket/prefix` or `az://container/prefix`
(also spelt `abfs://` or `abfss://`, with or without `container@ACCOUNT.dfs.core.windows.net`). Keys are paths
below it:

    {service}/{year}/{service}_tripdata_{year}-{month}.parquet    canonical Parquet
    {service}/{year}/_{service}_tripdata_{year}-{month}.json      its manifest and fingerprints
    zones/taxi_zone_lookup.parquet (and zones/_taxi_zone_lookup.json)
    raw/{service}/{file as published}                             downloads, before conversion
    raw/{service}/_{file as published}.json                       the source's validators of a download
    raw/_refused/{service}/{UTC time}_{file as published}          downloads conversion refused, kept to inspect

Nothing else builds lake paths. Listing and reading go through pyarrow.fs (on Azure, a pyarrow file system over
the official client: azure_fs.py). A file appears whole or not
at all: on a local disk by renaming a finished part file; on an object store by staging it in local
scratch and uploading it with the service's official client, which makes the object visible only once
the upload is complete and verified. The manifest (`_*.json`, ignored by pyarrow datasets and by
`*.parquet` wildcards) is written after its Parquet: a canonical month is done when both are there and
the Parquet has the size the manifest recorded, so a killed writer leaves nothing that looks done.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import functools
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pyarrow as pa
import pyarrow.fs as pafs

from luigi_tasks.catalog import Dataset
from luigi_tasks.convert import Manifest
from luigi_tasks.download import redact_urls
from luigi_tasks.errors import DataError, PipelineError
from luigi_tasks.files import Fingerprints, atomic_path, is_stale, writer_tag
from luigi_tasks.lazy import lazy_module

gcs = lazy_module("luigi_tasks.gcs")
s3 = lazy_module("luigi_tasks.s3")
azure = lazy_module("luigi_tasks.azure")

SCHEMES = {"gs": "gcs", "s3": "s3", "az": "azure", "abfs": "azure", "abfss": "azure"}
_EXPECTED_ROOT = "a local directory, gs://bucket/prefix, s3://bucket/prefix or az://container/prefix"
_CONTAINER = re.compile(r"^(?!.*--)[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$")
_READERS = 16  # manifests read at once from an object store (each is one small GET)


@dataclasses.dataclass(frozen=True)
class LakeEntry:
    """A canonical file's manifest (what it holds) and fingerprints (its bytes), kept beside it."""

    manifest: Manifest
    file: Fingerprints

    def to_json(self) -> bytes:
        return json.dumps({"manifest": json.loads(self.manifest.to_json()), "file": dataclasses.asdict(self.file)},
                          sort_keys=True, indent=1).encode()  # fmt: skip

    @classmethod
    def from_json(cls, data: bytes) -> LakeEntry | None:
        """The entry, or None if the bytes are not one (a file cut short is not a manifest)."""
        try:
            fields = json.loads(data)
            return cls(Manifest.from_json(json.dumps(fields["manifest"])), Fingerprints(**fields["file"]))
        except (ValueError, KeyError, TypeError):
            return None


def canonical_key(dataset: Dataset, month: dt.date | None) -> str:
    if month is None:
        return f"{dataset.name}/{dataset.file_name(None, '.parquet')}"
    return f"{dataset.name}/{month:%Y}/{dataset.file_name(month, '.parquet')}"


def entry_key(key: str) -> str:
    """The manifest beside a canonical file: '_' keeps it out of datasets and '*.parquet' globs."""
    folder, _, name = key.rpartition("/")
    return f"{folder}/_{name.removesuffix('.parquet')}.json"


def raw_key(dataset: Dataset, month: dt.date | None, kind: str) -> str:
    """`kind` is the published format ('csv.gz', 'csv', 'parquet'): the raw file keeps its bytes and ending."""
    return f"raw/{dataset.name}/{dataset.file_name(month, '.' + kind)}"


def source_key(raw_key: str) -> str:
    """The source's validators (ETag, Last-Modified, size) of a raw file, written beside it by its download."""
    folder, _, name = raw_key.rpartition("/")
    return f"{folder}/_{name}.json"


def refused_key(key: str, when: dt.datetime) -> str:
    """Where a raw file that conversion refused is kept: out of its key (so the next run downloads it again),
    beside other refusals of its service, the UTC time first so a listing sorts by when."""
    folder, _, name = key.removeprefix("raw/").rpartition("/")
    return f"raw/_refused/{folder}/{when.astimezone(dt.timezone.utc):%Y%m%dT%H%M%SZ}_{name}"


class Lake:
    """One lake root and the operations every task needs on it."""

    def __init__(self, root: str, *, scratch: str = "") -> None:
        self.root = root
        scheme, sep, rest = root.partition("://")
        if sep and scheme not in SCHEMES:
            raise DataError(f"[lake] root {root!r}: unknown scheme {scheme}://; expected {_EXPECTED_ROOT}")
        self.kind = SCHEMES[scheme] if sep else "local"
        self.account = ""  # Azure's storage account, when the root names it (container@ACCOUNT.dfs...)
        if self.kind == "local":
            self.base = str(Path(root).expanduser().resolve())
            self.fs: pafs.FileSystem = pafs.LocalFileSystem()
        else:
            where, _, prefix = rest.strip("/").partition("/")
            self.prefix = prefix.strip("/")
            self.bucket = where
            if self.kind == "azure":
                self.bucket, _, host = where.partition("@")
                self.account = host.partition(".")[0]
            if not self.bucket:
                noun = "container" if self.kind == "azure" else "bucket"
                raise DataError(f"[lake] root {root!r} names no {noun}; expected {scheme}://{noun}/prefix")
            if self.kind == "azure" and not _CONTAINER.match(self.bucket):
                raise DataError(
                    f"[lake] root {root!r}: {self.bucket!r} is not an Azure container name; expected 3 to 63 "
                    "lowercase letters, digits and single hyphens, starting and ending with a letter or digit"
                )
            self.base = f"{self.bucket}/{self.prefix}" if self.prefix else self.bucket
            self._uri_base = f"{scheme}://{where}" + (f"/{self.prefix}" if self.prefix else "")
            self.fs = self._object_store()
        self.scratch = Path(scratch or tempfile.gettempdir()) / "luigi_tasks"

    def _object_store(self) -> pafs.FileSystem:
        if self.kind != "azure":
            return _object_store(self.kind)
        from luigi_tasks import azure_fs

        return azure_fs.filesystem(azure.client(self.azure_account))

    @functools.cached_property
    def azure_account(self) -> azure.Account:
        """The storage account of an Azure lake, with the credential of Azure's standard chain."""
        try:
            return azure.account(self.account or _azure_settings().account)
        except azure.AccountError as exc:
            raise PipelineError(f"[lake] root {self.root}: {exc}") from None

    @property
    def is_local(self) -> bool:
        return self.kind == "local"

    def __repr__(self) -> str:
        return f"Lake({self.root!r})"

    # --- names ---------------------------------------------------------------------------------------------

    def _path(self, key: str) -> str:
        return f"{self.base}/{key}" if key else self.base

    def uri(self, key: str = "") -> str:
        """Where a key is, as a person (or BigQuery) names it: a local path, or the root's URI and the key."""
        if self.is_local:
            return self._path(key)
        return f"{self._uri_base}/{key}" if key else self._uri_base

    def local_path(self, key: str) -> Path:
        """The file of a key in a local lake (only there do files have local paths)."""
        assert self.is_local, "an object-store lake has no local paths"
        return Path(self._path(key))

    def object_name(self, key: str) -> str:
        """The object's name in its bucket (object-store lakes)."""
        return f"{self.prefix}/{key}" if self.prefix else key

    # --- reading -------------------------------------------------------------------------------------------

    def check(self) -> None:
        """Fail in one line if the root cannot hold a lake: a file, a missing bucket, no access."""
        try:
            info = self.fs.get_file_info(self.bucket if not self.is_local else self.base)
        except (OSError, pa.ArrowException) as exc:
            raise PipelineError(f"[lake] root {self.root}: cannot be reached: {_one_line(exc)}") from None
        if self.is_local:
            if info.type == pafs.FileType.File:
                raise DataError(f"[lake] root {self.root}: is a file; expected a directory")
            _check_writable(self.root, Path(self.base))
            return
        if info.type != pafs.FileType.Directory:
            noun = "container" if self.kind == "azure" else "bucket"
            raise PipelineError(f"[lake] root {self.root}: {noun} {self.bucket} does not exist (or cannot be seen)")

    def exists(self, key: str) -> bool:
        return self._info(key).type == pafs.FileType.File

    def size(self, key: str) -> int | None:
        info = self._info(key)
        return info.size if info.type == pafs.FileType.File else None

    def _info(self, key: str) -> pafs.FileInfo:
        try:
            return self.fs.get_file_info(self._path(key))
        except (OSError, pa.ArrowException) as exc:
            raise PipelineError(f"reading {self.uri(key)}: {_one_line(exc)}") from None

    def list(self, prefix: str) -> dict[str, int]:
        """Every finished file under a key prefix with its size: one listing (hidden part files left out)."""
        selector = pafs.FileSelector(self._path(prefix), recursive=True, allow_not_found=True)
        try:
            infos = self.fs.get_file_info(selector)
        except (OSError, pa.ArrowException) as exc:
            raise PipelineError(f"listing {self.uri(prefix)}: {_one_line(exc)}") from None
        start = len(self.base) + 1
        return {
            info.path[start:]: info.size
            for info in infos
            if info.type == pafs.FileType.File and not info.base_name.startswith(".")
        }

    def open_input(self, key: str) -> pa.NativeFile:
        """A random-access reader of the key (Parquet reads only the parts it needs)."""
        try:
            return self.fs.open_input_file(self._path(key))
        except (OSError, pa.ArrowException) as exc:
            raise PipelineError(f"reading {self.uri(key)}: {_one_line(exc)}") from None

    def read_bytes(self, key: str) -> bytes | None:
        """A small file's bytes, or None if there is none."""
        try:
            with self.fs.open_input_stream(self._path(key)) as source:
                return source.read()
        except FileNotFoundError:
            return None
        except (OSError, pa.ArrowException) as exc:
            raise PipelineError(f"reading {self.uri(key)}: {_one_line(exc)}") from None

    @contextlib.contextmanager
    def local_copy(self, key: str) -> Iterator[Path]:
        """A local file with the key's bytes: the file itself in a local lake, else a scratch copy."""
        if self.is_local:
            yield self.local_path(key)
            return
        with self._scratch_dir() as folder:
            copy = folder / key.rpartition("/")[2]
            try:
                pafs.copy_files(self._path(key), str(copy), source_filesystem=self.fs,
                                destination_filesystem=pafs.LocalFileSystem())  # fmt: skip
            except (OSError, pa.ArrowException) as exc:
                raise PipelineError(f"reading {self.uri(key)}: {_one_line(exc)}") from None
            yield copy

    # --- writing -------------------------------------------------------------------------------------------

    @contextlib.contextmanager
    def publish(self, key: str) -> Iterator[Path]:
        """Yield a local path for the caller to write (atomically, with files.atomic_path); then it is the key.

        In a local lake the path is the key's own file. Elsewhere it is in scratch and is uploaded whole
        afterwards; if the caller fails, nothing is uploaded.
        """
        if self.is_local:
            yield self.local_path(key)
            return
        with self._scratch_dir() as folder:
            staged = folder / key.rpartition("/")[2]
            yield staged
            self.upload(staged, key)

    def upload(self, path: Path, key: str) -> None:
        """Put a finished local file at `key` (object stores: the official client, verified by checksum)."""
        if self.is_local:
            with atomic_path(self.local_path(key)) as part:
                shutil.copyfile(path, part)
        elif self.kind == "gcs":
            gcs.upload_file(gcs.client(_gcp_settings()), path, self.bucket, self.object_name(key))
        elif self.kind == "azure":
            azure.upload_file(self.fs.handler.service, path, self.bucket, self.object_name(key))
        else:
            s3.upload_file(s3.client(), path, self.bucket, self.object_name(key))

    def write_bytes(self, key: str, data: bytes) -> None:
        """A small file, written whole like any other (a renamed part file, or one verified upload)."""
        with self.publish(key) as path, atomic_path(path) as part:
            part.write_bytes(data)

    def move(self, key: str, to: str) -> None:
        """Move a file to another key: a rename on a disk, a server-side copy then a delete on an object store."""
        try:
            if self.is_local:
                self.local_path(to).parent.mkdir(parents=True, exist_ok=True)
                os.replace(self.local_path(key), self.local_path(to))
            else:
                self.fs.copy_file(self._path(key), self._path(to))
                self.fs.delete_file(self._path(key))
        except (OSError, pa.ArrowException) as exc:
            raise PipelineError(f"moving {self.uri(key)} to {self.uri(to)}: {_one_line(exc)}") from None

    def delete(self, key: str) -> None:
        try:
            self.fs.delete_file(self._path(key))
        except FileNotFoundError:
            pass
        except (OSError, pa.ArrowException) as exc:
            raise PipelineError(f"deleting {self.uri(key)}: {_one_line(exc)}") from None

    @contextlib.contextmanager
    def _scratch_dir(self) -> Iterator[Path]:
        """A private scratch folder, removed afterwards; folders of dead writers are removed first."""
        self.scratch.mkdir(parents=True, exist_ok=True)
        for old in self.scratch.iterdir():
            if is_stale(old, old.name):
                shutil.rmtree(old, ignore_errors=True)
        folder = self.scratch / writer_tag()
        folder.mkdir()
        try:
            yield folder
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    # --- canonical files -----------------------------------------------------------------------------------

    def entry(self, key: str) -> LakeEntry | None:
        """The canonical file's entry if the file is complete (its size is the one its manifest recorded)."""
        data = self.read_bytes(entry_key(key))
        if data is None:
            return None
        entry = LakeEntry.from_json(data)
        return entry if entry is not None and self.size(key) == entry.file.size else None

    def _read_many(self, keys: list[str]) -> list[bytes | None]:
        """Small files read at once from an object store (each is one request), in turn from a disk."""
        if self.is_local or len(keys) < 2:
            return [self.read_bytes(k) for k in keys]
        try:
            with ThreadPoolExecutor(max_workers=_READERS) as pool:
                return list(pool.map(self.read_bytes, keys))
        except RuntimeError:  # no new threads at interpreter exit (the end-of-run summary asks then)
            return [self.read_bytes(k) for k in keys]

    def write_entry(self, key: str, entry: LakeEntry) -> None:
        self.write_bytes(entry_key(key), entry.to_json())

    def entries(self, keys: dict[str, object]) -> dict[object, LakeEntry]:
        """Complete canonical files among `keys` (key -> label), from one listing of their common folder.

        Only the small manifests are read, never a data file: a rerun that finds everything done reads
        bytes in proportion to the number of months, not to their size.
        """
        if not keys:
            return {}
        listed = self.list(os.path.commonpath([k.rpartition("/")[0] for k in keys]))
        candidates = {k: label for k, label in keys.items() if k in listed and entry_key(k) in listed}
        data = dict(zip(candidates, self._read_many([entry_key(k) for k in candidates]), strict=True))
        found = {}
        for key, label in candidates.items():
            entry = LakeEntry.from_json(data[key]) if data[key] is not None else None
            if entry is not None and entry.file.size == listed[key]:
                found[label] = entry
        return found


def _one_line(exc: BaseException) -> str:
    """The store's error in one line; its URLs without their query (an error may quote a request URL with a SAS)."""
    return redact_urls(" ".join(str(exc).split()) or type(exc).__name__)


def _gcp_settings():
    from luigi_tasks import config

    return config.gcp()


def _azure_settings():
    from luigi_tasks import config

    return config.azure()


def _object_store(kind: str) -> pafs.FileSystem:  # gs:// and s3://
    """pyarrow's client for the store, pointed at an emulator by the same variables the official clients read."""
    if kind == "gcs":
        emulator = os.environ.get("STORAGE_EMULATOR_HOST")
        settings = _gcp_settings()
        patience = {"retry_time_limit": dt.timedelta(seconds=settings.retry_seconds)}
        if emulator:
            scheme, _, host = emulator.rpartition("://")
            return pafs.GcsFileSystem(anonymous=True, scheme=scheme or "http", endpoint_override=host, **patience)
        return pafs.GcsFileSystem(project_id=settings.project or None, **patience)
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if endpoint:
        return pafs.S3FileSystem(endpoint_override=endpoint, region=region or "us-east-1")
    return pafs.S3FileSystem(region=region) if region else pafs.S3FileSystem()


def _check_writable(root: str, base: Path) -> None:
    """Fail in one line if files cannot be made in the root (or, before it exists, in its nearest parent):
    a read-only directory or file system, another user's directory, a parent that is a file."""
    existing = next(p for p in (base, *base.parents) if p.exists())
    if not existing.is_dir():
        raise DataError(f"[lake] root {root}: {existing} is a file; expected a directory")
    try:
        tempfile.TemporaryFile(dir=existing).close()  # unnamed on Linux: nothing is left, even if killed
    except OSError as exc:
        raise DataError(
            f"[lake] root {root}: cannot write in {existing}: {exc.strerror}; expected a directory this user can write"
        ) from None


@functools.lru_cache(maxsize=16)
def open_lake(root: str, scratch: str, context: tuple[str, ...] = ()) -> Lake:
    """The lake of a root, checked once per process (a bad root fails before any work).

    `context` (the emulator variables in force, the process) only keys the cache."""
    lake = Lake(root, scratch=scratch)
    lake.check()
    return lake
