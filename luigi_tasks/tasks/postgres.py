"""The PostgreSQL sink: tasks that load the lake into tables, their marker target and bulk check."""

from __future__ import annotations

import datetime as dt

import luigi

from luigi_tasks import config
from luigi_tasks.catalog import Dataset
from luigi_tasks.errors import PipelineError
from luigi_tasks.lake import LakeEntry
from luigi_tasks.postgres import load_month, load_zones, loaded_months
from luigi_tasks.sql import checked_identifier
from luigi_tasks.tasks.base import MonthTask, ReloadableTask, ZonesTask, log, unless_done
from luigi_tasks.tasks.lake import CanonicalTarget, lake_file, lake_task


class PostgresMonthTarget(luigi.Target):
    """Exists when the marker table has the month's row (e.g. 'yellow_tripdata:2021-01'), written in the load's
    own transaction from the lake file that is there now, and the month's partition (the zones table, for the
    lookup) is still in place."""

    def __init__(self, dataset: Dataset, month: dt.date | None, source: CanonicalTarget) -> None:
        self.dataset, self.month, self.source = dataset, month, source

    def exists(self) -> bool:
        entry = self.source.entry()
        # Asked even when the lake has no file yet: an unreachable database fails the check before any work.
        return bool(_loaded_from(self.dataset, {} if entry is None else {self.month: entry}))


def _loaded(dataset: Dataset, lake_files: dict[dt.date | None, str | None]) -> set[dt.date | None]:
    settings = config.postgres()
    marker_table = checked_identifier(settings.marker_table, "[postgres] marker_table")
    return loaded_months(settings.dsn, marker_table, dataset, lake_files)


def _loaded_from(dataset: Dataset, entries: dict[dt.date | None, LakeEntry]) -> set[dt.date | None]:
    return _loaded(dataset, {month: lake_file(entry) for month, entry in entries.items()})


class _LoadToPostgres(ReloadableTask):
    """Body of LoadToPostgres and LoadZonesToPostgres: stream the lake's Parquet into the table by COPY."""

    dataset: Dataset
    month: dt.date | None

    def requires(self) -> luigi.Task:
        return lake_task(getattr(self, "service", None), self.month)

    def output(self) -> PostgresMonthTarget:
        return PostgresMonthTarget(self.dataset, self.month, self.input())

    @unless_done
    def run(self) -> None:
        settings, source = config.postgres(), self.input()
        # The entry is read before the file: if the lake month is redone in between, the marker names the older
        # file, so the month counts as not done and loads again (never the other way round).
        entry = source.entry()
        if entry is None:
            raise PipelineError(f"{self.label}: {source.path} is not complete in the lake")
        if self.month is None:
            with source.lake.open_input(source.key) as parquet:
                self.rows = load_zones(
                    settings.dsn,
                    parquet,
                    marker_table=settings.marker_table,
                    lake_file=lake_file(entry),
                    lock_timeout=settings.lock_timeout,
                )
        else:
            self.rows = load_month(
                settings.dsn,
                lambda: source.lake.open_input(source.key),
                dataset=self.dataset,
                month=self.month,
                marker_table=settings.marker_table,
                lake_file=lake_file(entry),
                lock_timeout=settings.lock_timeout,
                progress=self.progress_reporter(unit="rows", scale=1),
                streams=settings.load_streams,
            )
        self.set_status_message(f"{self.rows:,} rows loaded")
        log.info("%s: %s rows loaded into PostgreSQL", self.label, f"{self.rows:,}")


class LoadToPostgres(MonthTask, _LoadToPostgres):
    """Loads one month into the service's table (e.g. yellow_tripdata), replacing that month only.

    The table is partitioned by source_month; the load is one transaction with its marker row in
    [postgres] marker_table, id '{service}_tripdata:{YYYY-MM}'. The Parquet is streamed from the lake.
    """


class LoadZonesToPostgres(ZonesTask, _LoadToPostgres):
    """Loads the zone lookup into the zones table ("LocationID", "Borough", "Zone", service_zone)."""


class PostgresSink:
    name = "postgres"

    def month_task(self, service: str, month: dt.date, reload: bool = False) -> luigi.Task:
        return LoadToPostgres(service=service, month=month, reload=reload)

    def zones_task(self, reload: bool = False) -> luigi.Task:
        return LoadZonesToPostgres(reload=reload)

    def done(self, dataset: Dataset, entries: dict[dt.date | None, LakeEntry]) -> set[dt.date | None]:
        """One query on the marker table and the catalogue for every month asked about."""
        return _loaded_from(dataset, entries)  # asked even for no month: an unreachable sink fails at once

    def held(self, dataset: Dataset, months: list[dt.date | None]) -> set[dt.date | None]:
        """Months loaded from any lake file: one query on the marker table."""
        return _loaded(dataset, dict.fromkeys(months))
