"""The sinks a month can go to: which tasks put it there, and a bulk "which months are done?" check.

A bulk check answers for a whole range of months with one round trip per sink and service (one
directory listing, one query), so that a backfill over years does not ask every task in turn.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import luigi

from luigi_tasks import config, history
from luigi_tasks.catalog import Dataset, parse_month
from luigi_tasks.convert import read_manifest
from luigi_tasks.errors import DataError
from luigi_tasks.lake import canonical_path
from luigi_tasks.lazy import lazy_module
from luigi_tasks.postgres import done_updates, update_id
from luigi_tasks.tasks.cloud import (
    LoadToBigQuery,
    LoadZonesToBigQuery,
    UploadToGCS,
    UploadToS3,
    UploadZonesToGCS,
    UploadZonesToS3,
    object_name,
    s3_key,
)
from luigi_tasks.tasks.lake import ToParquet, ZonesToParquet
from luigi_tasks.tasks.postgres import LoadToPostgres, LoadZonesToPostgres

gcs = lazy_module("luigi_tasks.gcs")
bigquery = lazy_module("luigi_tasks.bigquery")
s3 = lazy_module("luigi_tasks.s3")


class LakeSink:
    name = "lake"

    def month_tasks(self, service: str, month: dt.date) -> list[luigi.Task]:
        return [ToParquet(service=service, month=month)]

    def zones_task(self) -> luigi.Task:
        return ZonesToParquet()

    def done_months(self, dataset: Dataset, months: list[dt.date]) -> set[dt.date]:
        """One listing of {lake}/{service}/*/: a canonical file exists only once complete."""
        root = config.lake().path
        present = set()
        for path in (root / dataset.name).glob("*/*.parquet"):
            month = _month_of(path, dataset)
            if month and path == canonical_path(root, dataset, month):
                present.add(month)
        return present & set(months)


class PostgresSink:
    name = "postgres"

    def month_tasks(self, service: str, month: dt.date) -> list[luigi.Task]:
        return [LoadToPostgres(service=service, month=month)]

    def zones_task(self) -> luigi.Task:
        return LoadZonesToPostgres()

    def done_months(self, dataset: Dataset, months: list[dt.date]) -> set[dt.date]:
        """One query on the marker table for every month asked about."""
        settings = config.postgres()
        ids = {update_id(dataset, month): month for month in months}
        return {ids[done] for done in done_updates(settings.dsn, settings.marker_table, list(ids))}


def _month_of(path: Path, dataset: Dataset) -> dt.date | None:
    stem = path.stem.rsplit("_", 1)[-1]  # '{service}_tripdata_2021-01' -> '2021-01'
    try:
        return parse_month(stem)
    except DataError:
        return None


class GcsSink:
    name = "gcs"

    def month_tasks(self, service: str, month: dt.date) -> list[luigi.Task]:
        return [UploadToGCS(service=service, month=month)]

    def zones_task(self) -> luigi.Task:
        return UploadZonesToGCS()

    def done_months(self, dataset: Dataset, months: list[dt.date]) -> set[dt.date]:
        """One listing of gs://{bucket}/{prefix}/{service}/, compared by size and crc32c with the lake's files."""
        settings = config.gcp()
        root = config.lake().path
        locals_ = {month: canonical_path(root, dataset, month) for month in months}
        stored = gcs.stored_fingerprints(gcs.client(settings), settings.bucket, object_name(root / dataset.name))
        return {
            month
            for month, local in locals_.items()
            if local.exists() and stored.get(object_name(local)) == gcs.fingerprint(local)
        }


class BigQuerySink:
    name = "bigquery"

    def month_tasks(self, service: str, month: dt.date) -> list[luigi.Task]:
        return [LoadToBigQuery(service=service, month=month)]

    def zones_task(self) -> luigi.Task:
        return LoadZonesToBigQuery()

    def done_months(self, dataset: Dataset, months: list[dt.date]) -> set[dt.date]:
        """One query counting the rows of every month, compared with the manifests' row counts."""
        settings = config.gcp()
        counts = bigquery.month_counts(bigquery.client(settings), settings.dataset, dataset)
        root = config.lake().path
        done = set()
        for month in months:
            local = canonical_path(root, dataset, month)  # the manifest says how many rows the month has
            if month in counts and local.exists() and counts[month] == read_manifest(local).rows_out:
                done.add(month)
        return done


class S3Sink:
    name = "s3"

    def month_tasks(self, service: str, month: dt.date) -> list[luigi.Task]:
        return [UploadToS3(service=service, month=month)]

    def zones_task(self) -> luigi.Task:
        return UploadZonesToS3()

    def done_months(self, dataset: Dataset, months: list[dt.date]) -> set[dt.date]:
        """One listing of s3://{bucket}/{prefix}/{service}/, compared by size and ETag with the lake's files."""
        root = config.lake().path
        stored = s3.stored_etags(s3.client(), config.s3().bucket, s3_key(root / dataset.name))
        done = set()
        for month in months:
            local = canonical_path(root, dataset, month)
            if local.exists() and stored.get(s3_key(local)) == (local.stat().st_size, s3.expected_etag(local)):
                done.add(month)
        return done


SINKS = {sink.name: sink for sink in (LakeSink(), PostgresSink(), GcsSink(), BigQuerySink(), S3Sink())}


def rows_by_sink(months: list[tuple[str, dt.date]], sinks: tuple[str, ...]) -> dict[str, int]:
    """Rows now in each sink for these (service, month) pairs, from the run history."""
    tasks = {sink: [t for service, month in months for t in SINKS[sink].month_tasks(service, month)] for sink in sinks}
    rows = history.latest_rows(config.history().file, [t.task_id for ts in tasks.values() for t in ts])
    return {sink: sum(rows.get(t.task_id, 0) for t in ts) for sink, ts in tasks.items()}
