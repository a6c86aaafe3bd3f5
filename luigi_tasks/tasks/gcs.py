"""The GCS sink: a mirror of the lake's canonical files in gs://[gcp] bucket/[gcp] prefix/, from any lake.

When the lake itself is on GCS, its files already are GCS objects: the sink adds nothing and says so.
"""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

import luigi

from luigi_tasks import config
from luigi_tasks.catalog import Dataset
from luigi_tasks.errors import DataError
from luigi_tasks.lake import LakeEntry, canonical_key
from luigi_tasks.lazy import lazy_module
from luigi_tasks.tasks.base import MonthTask, ZonesTask
from luigi_tasks.tasks.lake import MirrorUpload, lake_entries, lake_is_on, lake_task, say_mirror_adds_nothing

gcs = lazy_module("luigi_tasks.gcs")

_PREFIX = re.compile(r"^[A-Za-z0-9_.=/-]*$")


def checked_prefix(prefix: str, key: str) -> str:
    """An object prefix from config: plain characters, no '..' segment (it names a place in a bucket)."""
    cleaned = prefix.strip("/")
    if not _PREFIX.match(cleaned) or ".." in cleaned.split("/"):
        raise DataError(f"{key} {prefix!r} is not a plain object prefix (letters, digits, _ . = - /; no '..')")
    return cleaned


def mirror_name(prefix: str, key: str) -> str:
    """A mirror object's name: the prefix + the file's key in the lake (the bucket mirrors the lake's layout)."""
    return f"{prefix}/{key}" if prefix else key


def object_name(key: str) -> str:
    return mirror_name(checked_prefix(config.gcp().prefix, "[gcp] prefix"), key)


class GCSObjectTarget(luigi.Target):
    """Exists when gs://bucket/name holds the bytes of the lake's file (the size and crc32c its manifest recorded)."""

    def __init__(self, bucket: str, name: str, source: luigi.Target) -> None:
        self.bucket, self.name, self.source = bucket, name, source

    @property
    def uri(self) -> str:
        return f"gs://{self.bucket}/{self.name}"

    def exists(self) -> bool:
        entry = self.source.entry()
        if entry is None:
            return False
        blob = gcs.get_blob(gcs.client(config.gcp()), self.bucket, self.name)
        return blob is not None and (blob.size, blob.crc32c) == (entry.file.size, entry.file.crc32c)


class _UploadToGCS(MirrorUpload):
    """Body of UploadToGCS and UploadZonesToGCS."""

    def output(self) -> GCSObjectTarget:
        return GCSObjectTarget(config.gcp().bucket, object_name(canonical_key(self.dataset, self.month)), self.input())

    def upload(self, path: Path, target: GCSObjectTarget) -> bool:
        return gcs.upload_file(
            gcs.client(config.gcp()), path, target.bucket, target.name, progress=self.progress_reporter()
        )


class UploadToGCS(MonthTask, _UploadToGCS):
    """Uploads a month's canonical Parquet to gs://{bucket}/{prefix}/{service}/{year}/, checked by crc32c."""


class UploadZonesToGCS(ZonesTask, _UploadToGCS):
    """Uploads the zone lookup's Parquet to gs://{bucket}/{prefix}/zones/."""


def gcs_object(service: str | None, month: dt.date | None) -> tuple[luigi.Task, str]:
    """The task that puts a canonical file on GCS and its gs:// URI: the lake itself when it is on GCS."""
    if lake_is_on("gcs"):
        task = lake_task(service, month)
        return task, task.output().path
    task = UploadZonesToGCS() if month is None else UploadToGCS(service=service, month=month)
    return task, task.output().uri


class GcsSink:
    name = "gcs"

    def month_task(self, service: str, month: dt.date, reload: bool = False) -> luigi.Task:
        if lake_is_on("gcs"):
            say_mirror_adds_nothing("gcs")
            return lake_task(service, month)
        return UploadToGCS(service=service, month=month, reload=reload)

    def zones_task(self, reload: bool = False) -> luigi.Task:
        return lake_task(None, None) if lake_is_on("gcs") else UploadZonesToGCS(reload=reload)

    def done(self, dataset: Dataset, entries: dict[dt.date | None, LakeEntry]) -> set[dt.date | None]:
        """One listing of the mirror's folder, compared with the size and crc32c each manifest recorded."""
        if lake_is_on("gcs"):
            return set(entries)
        settings = config.gcp()
        names = {month: object_name(canonical_key(dataset, month)) for month in entries}
        folder = mirror_name(checked_prefix(settings.prefix, "[gcp] prefix"), dataset.name)
        stored = gcs.stored_fingerprints(gcs.client(settings), settings.bucket, folder + "/")
        return {
            month
            for month, entry in entries.items()
            if (stored_print := stored.get(names[month])) is not None
            and (stored_print.size, stored_print.crc32c) == (entry.file.size, entry.file.crc32c)
        }

    def held(self, dataset: Dataset, months: list[dt.date | None]) -> set[dt.date | None]:
        """Months with an object in the mirror, whatever its bytes: one listing."""
        if lake_is_on("gcs"):
            return set(lake_entries(dataset, months))
        settings = config.gcp()
        folder = mirror_name(checked_prefix(settings.prefix, "[gcp] prefix"), dataset.name)
        stored = gcs.stored_fingerprints(gcs.client(settings), settings.bucket, folder + "/")
        return {month for month in months if object_name(canonical_key(dataset, month)) in stored}
