"""The BigQuery sink: one native table per service (a partition per month) and the zones table, loaded from
GCS objects: the lake's own when the lake is on GCS, else the gcs sink's mirror."""

from __future__ import annotations

import datetime as dt

import luigi
import pyarrow as pa
import pyarrow.parquet as pq

from luigi_tasks import config
from luigi_tasks.catalog import SERVICES, ZONES, Dataset, parse_month, service
from luigi_tasks.lake import LakeEntry
from luigi_tasks.lazy import lazy_module
from luigi_tasks.parameters import ChoiceParameter
from luigi_tasks.tasks.base import MonthTask, PipelineTask, ReloadableTask, ZonesTask, log, unless_done
from luigi_tasks.tasks.gcs import gcs_object, object_name
from luigi_tasks.tasks.lake import lake_task

bigquery = lazy_module("luigi_tasks.bigquery")


def _counts(dataset: Dataset) -> dict[dt.date | None, int]:
    """Rows per month in BigQuery (one query), or of the zones table (keyed None)."""
    settings = config.gcp()
    bq = bigquery.client(settings)
    if dataset is ZONES:
        return {None: bigquery.zones_rows(bq, settings.dataset)}
    return dict(bigquery.month_counts(bq, settings.dataset, dataset))


def _done(dataset: Dataset, entries: dict[dt.date | None, LakeEntry]) -> set[dt.date | None]:
    """Months whose row count in BigQuery is the one their manifest recorded."""
    counts = _counts(dataset)  # asked even for no month: an unreachable sink fails at once
    return {month for month, entry in entries.items() if counts.get(month) == entry.manifest.rows_out}


class BigQueryMonthTarget(luigi.Target):
    """Exists when the table holds as many rows for the month (or the zones table for the lookup) as the lake
    file's manifest says."""

    def __init__(self, dataset: Dataset, month: dt.date | None, source: luigi.Target) -> None:
        self.dataset, self.month, self.source = dataset, month, source

    def exists(self) -> bool:
        entry = self.source.entry()
        return entry is not None and bool(_done(self.dataset, {self.month: entry}))


class _LoadToBigQuery(ReloadableTask):
    """Body of LoadToBigQuery and LoadZonesToBigQuery."""

    dataset: Dataset
    month: dt.date | None

    def requires(self) -> list[luigi.Task]:
        service_name = getattr(self, "service", None)
        return [lake_task(service_name, self.month), gcs_object(service_name, self.month)[0]]

    def output(self) -> BigQueryMonthTarget:
        return BigQueryMonthTarget(self.dataset, self.month, self.input()[0])

    def file_schema(self) -> pa.Schema:
        """The lake file's columns, read from its footer: the GCS object has the same bytes (UploadToGCS checks)."""
        source = self.input()[0]
        with source.lake.open_input(source.key) as file:
            return pq.read_schema(file)

    @unless_done
    def run(self) -> None:
        settings = config.gcp()
        bq = bigquery.client(settings)
        uri = gcs_object(getattr(self, "service", None), self.month)[1]
        if self.month is None:
            self.rows = bigquery.load_zones(bq, uri, bq_dataset=settings.dataset, file_schema=self.file_schema())
        else:
            self.rows = bigquery.load_month(
                bq,
                uri,
                bq_dataset=settings.dataset,
                dataset=self.dataset,
                month=self.month,
                expected_rows=self.input()[0].entry().manifest.rows_out,
                file_schema=self.file_schema(),
            )
        log.info("%s: %s rows loaded into BigQuery", self.label, f"{self.rows:,}")


class LoadToBigQuery(MonthTask, _LoadToBigQuery):
    """Replaces one month of {dataset}.{service}_tripdata (partitioned by source_month) from its GCS object."""


class LoadZonesToBigQuery(ZonesTask, _LoadToBigQuery):
    """Loads the zone lookup into {dataset}.zones (replaced whole, in one load job)."""


class BigQueryExternalTable(PipelineTask):
    """Creates {dataset}.{service}_tripdata_external over every month of the service on GCS.

    The schema is the catalogue's plus the columns months of the lake added (from their manifests), never
    autodetected, so months whose headers differed read as one; a month that adds a column makes the table
    incomplete until a run adds it. Only real BigQuery serves external tables (the emulator makes an empty plain
    table of them).
    """

    service = ChoiceParameter(choices=list(SERVICES), description="TLC service: " + ", ".join(SERVICES))

    def definition(self):
        settings = config.gcp()
        lake = config.lake().open()
        if lake.kind == "gcs":
            folder = f"gs://{lake.bucket}/{lake.object_name(self.service)}"
        else:
            folder = f"gs://{settings.bucket}/{object_name(self.service)}"
        uri = f"{folder}/*.parquet"
        dataset = service(self.service)
        return bigquery.external_table(
            bigquery.client(settings), settings.dataset, dataset, uri, _columns_added(lake, dataset)
        )

    def is_complete(self) -> bool:
        return bigquery.external_table_is_current(bigquery.client(config.gcp()), self.definition())

    def run(self) -> None:
        settings = config.gcp()
        bigquery.create_external_table(bigquery.client(settings), settings.dataset, self.definition())


def _columns_added(lake, dataset: Dataset) -> dict[dt.date, dict[str, str]]:
    """The columns each month of the service in the lake added (its manifest's columns_added): one listing."""
    keys = [key for key in lake.list(dataset.name) if key.endswith(".parquet") and "/_" not in key]
    entries = lake.entries({key: key for key in keys}).values()
    return {parse_month(entry.manifest.month): entry.manifest.columns_added for entry in entries}


class BigQuerySink:
    name = "bigquery"

    def month_task(self, service: str, month: dt.date, reload: bool = False) -> luigi.Task:
        return LoadToBigQuery(service=service, month=month, reload=reload)

    def zones_task(self, reload: bool = False) -> luigi.Task:
        return LoadZonesToBigQuery(reload=reload)

    def done(self, dataset: Dataset, entries: dict[dt.date | None, LakeEntry]) -> set[dt.date | None]:
        """One query counting the rows of every month, compared with the manifests' row counts."""
        return _done(dataset, entries)

    def held(self, dataset: Dataset, months: list[dt.date | None]) -> set[dt.date | None]:
        """Months with rows in the table, however many: one query."""
        counts = _counts(dataset)
        return {month for month in months if counts.get(month)}
