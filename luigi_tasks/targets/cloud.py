"""Is a month in GCS or BigQuery? A GCS object with the local file's size and crc32c; a BigQuery month
with as many rows as the manifest says. Both have bulk checks for a range: one listing, one query."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import luigi

from luigi_tasks.catalog import Dataset
from luigi_tasks.lazy import lazy_module

gcs = lazy_module("luigi_tasks.gcs")
bigquery = lazy_module("luigi_tasks.bigquery")


class GCSObjectTarget(luigi.Target):
    """Exists when gs://bucket/name holds the same bytes as `local` (size and crc32c)."""

    def __init__(self, gcp_project: str, bucket: str, name: str, local: Path) -> None:
        self.project, self.bucket, self.name, self.local = gcp_project, bucket, name, local

    @property
    def uri(self) -> str:
        return f"gs://{self.bucket}/{self.name}"

    def exists(self) -> bool:
        if not self.local.exists():
            return False
        blob = gcs.bucket_or_error(gcs.client(self.project), self.bucket).get_blob(self.name)
        return blob is not None and gcs.Fingerprint(blob.size, blob.crc32c) == gcs.fingerprint(self.local)


class BigQueryMonthTarget(luigi.Target):
    """Exists when the service's table holds `expected_rows` rows for the month."""

    def __init__(self, gcp_project: str, location: str, bq_dataset: str, dataset: Dataset, month: dt.date,
                 expected_rows: int | None) -> None:  # fmt: skip
        self.project, self.location, self.bq_dataset = gcp_project, location, bq_dataset
        self.dataset, self.month, self.expected_rows = dataset, month, expected_rows

    def exists(self) -> bool:
        if self.expected_rows is None:
            return False
        bq = bigquery.client(self.project, self.location)
        return bigquery.month_counts(bq, self.bq_dataset, self.dataset).get(self.month) == self.expected_rows
