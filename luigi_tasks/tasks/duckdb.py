"""The DuckDB sink: tasks that load the lake into tables of a local DuckDB file, their target and bulk check."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import luigi

from luigi_tasks import config
from luigi_tasks.catalog import ZONES, Dataset
from luigi_tasks.duckdb import Warehouse, course_name_problem, load, loaded_months
from luigi_tasks.errors import PipelineError
from luigi_tasks.lake import LakeEntry
from luigi_tasks.tasks.base import MonthTask, ReloadableTask, ZonesTask, log, unless_done
from luigi_tasks.tasks.lake import CanonicalTarget, lake_file, lake_task


def configured_warehouse() -> Warehouse:
    """The DuckDB file and its settings, as [duckdb] says."""
    settings = config.duckdb()
    return Warehouse(
        settings.file,
        settings.schema,
        settings.marker_table,
        settings.lock_wait,
        memory_limit=settings.memory_limit,
        threads=settings.threads,
        temp_directory=settings.temp_directory,
    )


_SAID: set[Path] = set()  # files whose name the course's dbt sources cannot find, said so in this process


def _say_if_the_course_cannot_find(path: Path) -> None:
    """A warning, once per process and file, when the course's dbt sources cannot find the file by its name.

    Said from the load's check too: luigi checks in the scheduling process, so its worker processes have it said."""
    if path not in _SAID and (problem := course_name_problem(path)):
        _SAID.add(path)
        log.warning("DuckDB file %s: %s", path, problem)


def _table(dataset: Dataset) -> str:
    return config.duckdb().table_for(None if dataset is ZONES else dataset.name)


class DuckDBMonthTarget(luigi.Target):
    """Exists when the marker table has the month's row (e.g. 'yellow_tripdata:2021-01'), written in the load's
    own transaction from the lake file that is there now, and the table still holds the rows it counted."""

    def __init__(self, dataset: Dataset, month: dt.date | None, source: CanonicalTarget) -> None:
        self.dataset, self.month, self.source = dataset, month, source

    def exists(self) -> bool:
        _say_if_the_course_cannot_find(config.duckdb().file)
        entry = self.source.entry()
        return bool(_loaded(self.dataset, {} if entry is None else {self.month: entry}))


def _loaded(dataset: Dataset, entries: dict[dt.date | None, LakeEntry]) -> set[dt.date | None]:
    lake_files = {month: lake_file(entry) for month, entry in entries.items()}
    return loaded_months(configured_warehouse(), dataset, _table(dataset), lake_files)


class _LoadToDuckDB(ReloadableTask):
    """Body of LoadToDuckDB and LoadZonesToDuckDB: the lake's Parquet into the table, read by DuckDB itself."""

    dataset: Dataset
    month: dt.date | None

    @property
    def resources(self) -> dict[str, int]:
        # DuckDB lets one process write a file: one scheduler runs one load into it at a time.
        return {f"duckdb:{config.duckdb().file}": 1}

    def requires(self) -> luigi.Task:
        return lake_task(getattr(self, "service", None), self.month)

    def output(self) -> DuckDBMonthTarget:
        return DuckDBMonthTarget(self.dataset, self.month, self.input())

    @unless_done
    def run(self) -> None:
        source = self.input()
        # The entry is read before the file: if the lake month is redone in between, the marker names the older
        # file, so the month counts as not done and loads again (never the other way round).
        entry = source.entry()
        if entry is None:
            raise PipelineError(f"{self.label}: {source.path} is not complete in the lake")
        warehouse, table = configured_warehouse(), _table(self.dataset)
        _say_if_the_course_cannot_find(warehouse.path)
        self.set_status_message(f"loading into {warehouse.path}")
        common = {"dataset": self.dataset, "table": table, "month": self.month, "lake_file": lake_file(entry)}
        if source.lake.is_local:
            self.rows = load(warehouse, source.lake.local_path(source.key), **common)
        else:
            with source.lake.open_input(source.key) as parquet:
                progress = self.progress_reporter(unit="rows", scale=1)
                self.rows = load(warehouse, parquet, progress=progress, **common)
        self.set_status_message(f"{self.rows:,} rows loaded")
        log.info("%s: %s rows loaded into %s.%s in %s", self.label, f"{self.rows:,}", warehouse.schema, table,
                 warehouse.path)  # fmt: skip


class LoadToDuckDB(MonthTask, _LoadToDuckDB):
    """Loads one month into the service's table of the DuckDB file ([duckdb] path, schema, table; by default
    prod.yellow_tripdata in taxi_rides_ny.duckdb beside the lake), replacing that month only.

    The load is one transaction with its marker row in [duckdb] marker_table, id '{table}:{YYYY-MM}'.
    """


class LoadZonesToDuckDB(ZonesTask, _LoadToDuckDB):
    """Loads the zone lookup into [duckdb] zones_table (default prod.zones) of the DuckDB file."""


class DuckDBSink:
    name = "duckdb"

    # Said as the graph is built, in the scheduling process: a Backfill answers luigi's first check of a missing
    # month itself (found_not_done), so the load's check may first run in a worker process.
    def month_task(self, service: str, month: dt.date, reload: bool = False) -> luigi.Task:
        _say_if_the_course_cannot_find(config.duckdb().file)
        return LoadToDuckDB(service=service, month=month, reload=reload)

    def zones_task(self, reload: bool = False) -> luigi.Task:
        _say_if_the_course_cannot_find(config.duckdb().file)
        return LoadZonesToDuckDB(reload=reload)

    def done(self, dataset: Dataset, entries: dict[dt.date | None, LakeEntry]) -> set[dt.date | None]:
        """One query on the marker table and the table's month counts for every month asked about."""
        return _loaded(dataset, entries)

    def held(self, dataset: Dataset, months: list[dt.date | None]) -> set[dt.date | None]:
        """Months loaded from any lake file, their rows all there: one query."""
        return loaded_months(configured_warehouse(), dataset, _table(dataset), dict.fromkeys(months))
