"""Tasks that load the lake into PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import luigi

from luigi_tasks import config
from luigi_tasks.catalog import ZONES
from luigi_tasks.postgres import load_month, load_zones, update_id
from luigi_tasks.targets.postgres import PostgresMarkerTarget
from luigi_tasks.tasks.base import MonthTask, PipelineTask, log
from luigi_tasks.tasks.lake import ToParquet, ZonesToParquet


def _marker(update: str) -> PostgresMarkerTarget:
    settings = config.postgres()
    return PostgresMarkerTarget(settings.dsn, settings.marker_table, update)


class LoadToPostgres(MonthTask):
    """Loads one month into the service's table (e.g. yellow_tripdata), replacing that month only.

    The table is partitioned by source_month; the load is one transaction with its marker row in
    [postgres] marker_table, id '{service}_tripdata:{YYYY-MM}'.
    """

    reload = luigi.BoolParameter(
        default=False, significant=False, description="Load the month again even if it is marked done"
    )

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._reloaded = False

    def requires(self) -> ToParquet:
        return ToParquet(service=self.service, month=self.month)

    def output(self) -> PostgresMarkerTarget:
        return _marker(update_id(self.dataset, self.month))

    def is_complete(self) -> bool:
        if self.reload and not self._reloaded:
            return False
        return super().is_complete()

    def run(self) -> None:
        rows = load_month(
            config.postgres().dsn,
            Path(self.input().path),
            dataset=self.dataset,
            month=self.month,
            marker_table=config.postgres().marker_table,
            progress=self.progress_reporter(unit="rows", scale=1),
        )
        self._reloaded = True
        self.rows = rows
        self.set_status_message(f"{rows:,} rows loaded")
        log.info("%s: %s rows loaded into PostgreSQL", self.label, f"{rows:,}")


class LoadZonesToPostgres(PipelineTask):
    """Loads the zone lookup into the zones table ("LocationID", "Borough", "Zone", service_zone)."""

    def requires(self) -> ZonesToParquet:
        return ZonesToParquet()

    def output(self) -> PostgresMarkerTarget:
        return _marker(update_id(ZONES, None))

    def run(self) -> None:
        rows = load_zones(config.postgres().dsn, Path(self.input().path), marker_table=config.postgres().marker_table)
        self.rows = rows
        log.info("zones: %s rows loaded into PostgreSQL", f"{rows:,}")
