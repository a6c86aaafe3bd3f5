"""Tasks that put the lake into Google Cloud: GCS objects, BigQuery tables."""

from __future__ import annotations

import re
from pathlib import Path

import luigi

from luigi_tasks import config
from luigi_tasks.catalog import SERVICES, ZONES, service
from luigi_tasks.convert import read_manifest
from luigi_tasks.errors import DataError
from luigi_tasks.lake import canonical_path
from luigi_tasks.lazy import lazy_module
from luigi_tasks.targets.cloud import BigQueryMonthTarget, CopiedFromS3Target, GCSObjectTarget, S3ObjectTarget
from luigi_tasks.tasks.base import MonthTask, PipelineTask, log
from luigi_tasks.tasks.lake import ToParquet, ZonesToParquet

gcs = lazy_module("luigi_tasks.gcs")
bigquery = lazy_module("luigi_tasks.bigquery")
s3 = lazy_module("luigi_tasks.s3")


_PREFIX = re.compile(r"^[A-Za-z0-9_.=/-]*$")


def checked_prefix(prefix: str, key: str) -> str:
    """An object prefix from config: plain characters, no '..' segment (it names a place in a bucket)."""
    cleaned = prefix.strip("/")
    if not _PREFIX.match(cleaned) or ".." in cleaned.split("/"):
        raise DataError(f"{key} {prefix!r} is not a plain object prefix (letters, digits, _ . = - /; no '..')")
    return cleaned


def _prefixed(prefix: str, relative: str) -> str:
    return f"{prefix}/{relative}" if prefix else relative


def object_name(local: Path) -> str:
    """gs://{bucket}/{prefix}/ + the file's path in the lake: the bucket mirrors the lake's layout."""
    relative = local.relative_to(config.lake().path).as_posix()
    return _prefixed(checked_prefix(config.gcp().prefix, "[gcp] prefix"), relative)


def _object_target(local: Path) -> GCSObjectTarget:
    return GCSObjectTarget(config.gcp().bucket, object_name(local), local)


def _upload(task: PipelineTask) -> None:
    target = task.output()
    uploaded = gcs.upload_file(
        gcs.client(config.gcp()), target.local, target.bucket, target.name, progress=task.progress_reporter()
    )
    log.info("%s: %s %s", task.task_id, "uploaded to" if uploaded else "already at", target.uri)


class UploadToGCS(MonthTask):
    """Uploads a month's canonical Parquet to gs://{bucket}/{prefix}/{service}/{year}/, checked by crc32c."""

    def requires(self) -> ToParquet:
        return ToParquet(service=self.service, month=self.month)

    def output(self) -> GCSObjectTarget:
        return _object_target(canonical_path(config.lake().path, self.dataset, self.month))

    def run(self) -> None:
        _upload(self)


class UploadZonesToGCS(PipelineTask):
    """Uploads the zone lookup's Parquet to gs://{bucket}/{prefix}/zones/."""

    def requires(self) -> ZonesToParquet:
        return ZonesToParquet()

    def output(self) -> GCSObjectTarget:
        return _object_target(canonical_path(config.lake().path, ZONES, None))

    def run(self) -> None:
        _upload(self)


class LoadToBigQuery(MonthTask):
    """Replaces one month of {dataset}.{service}_tripdata (partitioned by source_month) from its GCS object."""

    def requires(self) -> UploadToGCS:
        return UploadToGCS(service=self.service, month=self.month)

    def output(self) -> BigQueryMonthTarget:
        settings = config.gcp()
        local = canonical_path(config.lake().path, self.dataset, self.month)
        expected = read_manifest(local).rows_out if local.exists() else None
        return BigQueryMonthTarget(settings.dataset, self.dataset, self.month, expected)

    def run(self) -> None:
        settings = config.gcp()
        self.rows = bigquery.load_month(
            bigquery.client(settings),
            self.input().uri,
            bq_dataset=settings.dataset,
            dataset=self.dataset,
            month=self.month,
            expected_rows=read_manifest(self.input().local).rows_out,
        )
        log.info("%s: %s rows loaded into BigQuery", self.label, f"{self.rows:,}")


class LoadZonesToBigQuery(PipelineTask):
    """Loads the zone lookup into {dataset}.zones (replaced whole, in one load job)."""

    def requires(self) -> UploadZonesToGCS:
        return UploadZonesToGCS()

    def is_complete(self) -> bool:
        local = canonical_path(config.lake().path, ZONES, None)
        if not local.exists():
            return False
        settings = config.gcp()
        bq = bigquery.client(settings)
        return bigquery.zones_rows(bq, settings.dataset) == read_manifest(local).rows_out

    def run(self) -> None:
        settings = config.gcp()
        bq = bigquery.client(settings)
        self.rows = bigquery.load_zones(bq, self.input().uri, bq_dataset=settings.dataset)


class BigQueryExternalTable(PipelineTask):
    """Creates {dataset}.{service}_tripdata_external over every month of the service in the lake bucket.

    The schema is the catalogue's, never autodetected, so months whose headers differed read as one.
    Only real BigQuery serves external tables (the emulator makes an empty plain table of them).
    """

    service = luigi.ChoiceParameter(choices=list(SERVICES), description="TLC service: " + ", ".join(SERVICES))

    def definition(self):
        settings = config.gcp()
        bq = bigquery.client(settings)
        uri = f"gs://{settings.bucket}/{object_name(config.lake().path / self.service)}/*.parquet"
        return bigquery.external_table(bq, settings.dataset, service(self.service), uri)

    def is_complete(self) -> bool:
        settings = config.gcp()
        return bigquery.table_exists(bigquery.client(settings), self.definition().reference)

    def run(self) -> None:
        settings = config.gcp()
        bq = bigquery.client(settings)
        bigquery.check_dataset(bq, settings.dataset)
        bq.create_table(self.definition(), exists_ok=True)


def s3_key(local: Path) -> str:
    """s3://{bucket}/{prefix}/ + the file's path in the lake."""
    relative = local.relative_to(config.lake().path).as_posix()
    return _prefixed(checked_prefix(config.s3().prefix, "[s3] prefix"), relative)


class UploadToS3(MonthTask):
    """Mirrors a month's canonical Parquet to s3://{bucket}/{prefix}/{service}/{year}/ (multipart, ETag-verified)."""

    def requires(self) -> ToParquet:
        return ToParquet(service=self.service, month=self.month)

    def output(self) -> S3ObjectTarget:
        local = canonical_path(config.lake().path, self.dataset, self.month)
        return S3ObjectTarget(config.s3().bucket, s3_key(local), local)

    def run(self) -> None:
        target = self.output()
        uploaded = s3.upload_file(s3.client(), target.local, target.bucket, target.key)
        log.info(
            "%s: %s s3://%s/%s", self.label, "uploaded to" if uploaded else "already at", target.bucket, target.key
        )


class UploadZonesToS3(PipelineTask):
    """Mirrors the zone lookup's Parquet to s3://{bucket}/{prefix}/zones/."""

    def requires(self) -> ZonesToParquet:
        return ZonesToParquet()

    def output(self) -> S3ObjectTarget:
        local = canonical_path(config.lake().path, ZONES, None)
        return S3ObjectTarget(config.s3().bucket, s3_key(local), local)

    def run(self) -> None:
        target = self.output()
        s3.upload_file(s3.client(), target.local, target.bucket, target.key)


class TransferS3ToGCS(MonthTask):
    """Copies a month's object from s3://{[s3] bucket}/{[s3] prefix}/... into the GCS lake at the same path.

    Streams S3 -> GCS (no local copy), verifies the crc32c of what passed through against what GCS
    stored, and records the S3 ETag on the GCS object, so a rerun copies nothing unless S3 changed.
    """

    def _paths(self) -> tuple[str, str]:
        local = canonical_path(config.lake().path, self.dataset, self.month)
        return s3_key(local), object_name(local)

    def output(self) -> CopiedFromS3Target:
        key, name = self._paths()
        return CopiedFromS3Target(config.gcp().bucket, name, config.s3().bucket, key)

    def run(self) -> None:
        key, name = self._paths()
        copied = s3.copy_to_gcs(s3.client(), gcs.client(config.gcp()), config.s3().bucket, key,
                                config.gcp().bucket, name)  # fmt: skip
        log.info("%s: %s gs://%s/%s", self.label, "copied to" if copied else "already at", config.gcp().bucket, name)
