"""The S3 sink: a mirror of the lake's canonical files in s3://[s3] bucket/[s3] prefix/, from any lake; and a
month's copy from that mirror to GCS.

When the lake itself is on S3, its files already are S3 objects: the sink adds nothing and says so.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import luigi

from luigi_tasks import config
from luigi_tasks.catalog import Dataset
from luigi_tasks.lake import LakeEntry, canonical_key
from luigi_tasks.lazy import lazy_module
from luigi_tasks.tasks.base import MonthTask, ZonesTask, log
from luigi_tasks.tasks.gcs import checked_prefix, mirror_name, object_name
from luigi_tasks.tasks.lake import MirrorUpload, lake_entries, lake_is_on, lake_task, say_mirror_adds_nothing

gcs = lazy_module("luigi_tasks.gcs")
s3 = lazy_module("luigi_tasks.s3")


def s3_key(key: str) -> str:
    return mirror_name(checked_prefix(config.s3().prefix, "[s3] prefix"), key)


class S3ObjectTarget(luigi.Target):
    """Exists when s3://bucket/key holds the bytes of the lake's file (the size and ETag its manifest recorded)."""

    def __init__(self, bucket: str, key: str, source: luigi.Target) -> None:
        self.bucket, self.key, self.source = bucket, key, source

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.key}"

    def exists(self) -> bool:
        entry = self.source.entry()
        if entry is None:
            return False
        stored = s3.stored_etags(s3.client(), self.bucket, self.key).get(self.key)
        return stored == (entry.file.size, entry.file.s3_etag)


class _UploadToS3(MirrorUpload):
    """Body of UploadToS3 and UploadZonesToS3."""

    def output(self) -> S3ObjectTarget:
        return S3ObjectTarget(config.s3().bucket, s3_key(canonical_key(self.dataset, self.month)), self.input())

    def upload(self, path: Path, target: S3ObjectTarget) -> bool:
        return s3.upload_file(s3.client(), path, target.bucket, target.key)


class UploadToS3(MonthTask, _UploadToS3):
    """Mirrors a month's canonical Parquet to s3://{bucket}/{prefix}/{service}/{year}/ (multipart, ETag-verified)."""


class UploadZonesToS3(ZonesTask, _UploadToS3):
    """Mirrors the zone lookup's Parquet to s3://{bucket}/{prefix}/zones/."""


class CopiedFromS3Target(luigi.Target):
    """Exists when gs://bucket/name was copied from the current version (ETag) of s3://s3_bucket/key."""

    def __init__(self, bucket: str, name: str, s3_bucket: str, key: str) -> None:
        self.bucket, self.name, self.s3_bucket, self.key = bucket, name, s3_bucket, key

    def exists(self) -> bool:
        blob = gcs.get_blob(gcs.client(config.gcp()), self.bucket, self.name)
        if blob is None:
            return False
        head = s3.head_object(s3.client(), self.s3_bucket, self.key)
        return (blob.metadata or {}).get("s3-etag") == head["ETag"].strip('"') and blob.size == head["ContentLength"]


class TransferS3ToGCS(MonthTask):
    """Copies a month's object from s3://{[s3] bucket}/{[s3] prefix}/... to gs://{[gcp] bucket}/{[gcp] prefix}/...

    Streams S3 -> GCS (no local copy), verifies the crc32c of what passed through against what GCS
    stored, and records the S3 ETag on the GCS object, so a rerun copies nothing unless S3 changed.
    """

    def output(self) -> CopiedFromS3Target:
        key = canonical_key(self.dataset, self.month)
        return CopiedFromS3Target(config.gcp().bucket, object_name(key), config.s3().bucket, s3_key(key))

    def run(self) -> None:
        target = self.output()
        copied = s3.copy_to_gcs(s3.client(), gcs.client(config.gcp()), target.s3_bucket, target.key,
                                target.bucket, target.name)  # fmt: skip
        log.info("%s: %s gs://%s/%s", self.label, "copied to" if copied else "already at", target.bucket, target.name)


class S3Sink:
    name = "s3"

    def month_task(self, service: str, month: dt.date, reload: bool = False) -> luigi.Task:
        if lake_is_on("s3"):
            say_mirror_adds_nothing("s3")
            return lake_task(service, month)
        return UploadToS3(service=service, month=month, reload=reload)

    def zones_task(self, reload: bool = False) -> luigi.Task:
        return lake_task(None, None) if lake_is_on("s3") else UploadZonesToS3(reload=reload)

    def done(self, dataset: Dataset, entries: dict[dt.date | None, LakeEntry]) -> set[dt.date | None]:
        """One listing of the mirror's folder, compared with the size and ETag each manifest recorded."""
        if lake_is_on("s3"):
            return set(entries)
        folder = s3_key(dataset.name) + "/"
        stored = s3.stored_etags(s3.client(), config.s3().bucket, folder)
        return {
            month
            for month, entry in entries.items()
            if stored.get(s3_key(canonical_key(dataset, month))) == (entry.file.size, entry.file.s3_etag)
        }

    def held(self, dataset: Dataset, months: list[dt.date | None]) -> set[dt.date | None]:
        """Months with an object in the mirror, whatever its bytes: one listing."""
        if lake_is_on("s3"):
            return set(lake_entries(dataset, months))
        stored = s3.stored_etags(s3.client(), config.s3().bucket, s3_key(dataset.name) + "/")
        return {month for month in months if s3_key(canonical_key(dataset, month)) in stored}
