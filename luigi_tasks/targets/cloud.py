"""Is a month in GCS or BigQuery? A GCS object with the local file's size and crc32c; a BigQuery month
with as many rows as the manifest says. Both have bulk checks for a range: one listing, one query."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import luigi

from luigi_tasks import config
from luigi_tasks.catalog import Dataset
from luigi_tasks.lazy import lazy_module

gcs = lazy_module("luigi_tasks.gcs")
bigquery = lazy_module("luigi_tasks.bigquery")
s3 = lazy_module("luigi_tasks.s3")


class GCSObjectTarget(luigi.Target):
    """Exists when gs://bucket/name holds the same bytes as `local` (size and crc32c)."""

    def __init__(self, bucket: str, name: str, local: Path) -> None:
        self.bucket, self.name, self.local = bucket, name, local

    @property
    def uri(self) -> str:
        return f"gs://{self.bucket}/{self.name}"

    def exists(self) -> bool:
        if not self.local.exists():
            return False
        blob = gcs.get_blob(gcs.client(config.gcp()), self.bucket, self.name)
        return blob is not None and gcs.Fingerprint(blob.size, blob.crc32c) == gcs.fingerprint(self.local)


class BigQueryMonthTarget(luigi.Target):
    """Exists when the service's table holds `expected_rows` rows for the month."""

    def __init__(self, bq_dataset: str, dataset: Dataset, month: dt.date, expected_rows: int | None) -> None:
        self.bq_dataset, self.dataset, self.month, self.expected_rows = bq_dataset, dataset, month, expected_rows

    def exists(self) -> bool:
        if self.expected_rows is None:
            return False
        bq = bigquery.client(config.gcp())
        return bigquery.month_counts(bq, self.bq_dataset, self.dataset).get(self.month) == self.expected_rows


class S3ObjectTarget(luigi.Target):
    """Exists when s3://bucket/key holds the same bytes as `local` (size and multipart ETag)."""

    def __init__(self, bucket: str, key: str, local: Path) -> None:
        self.bucket, self.key, self.local = bucket, key, local

    def exists(self) -> bool:
        if not self.local.exists():
            return False
        stored = s3.stored_etags(s3.client(), self.bucket, self.key).get(self.key)
        return stored == (self.local.stat().st_size, s3.expected_etag(self.local))


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
