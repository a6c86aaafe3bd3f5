"""The sinks a month can go to, behind one small interface, and the registry of them.

A sink names the task that puts a month (or the zone lookup) there, and answers "which of these months
are done?" for a whole range with one round trip (one listing, one query), so that a backfill over years
does not ask every task in turn. It is given the lake's complete files with their manifests (found by one
listing of the lake), so it can compare row counts and checksums without reading any data file.

A new sink is a work module, a tasks module with its tasks and a class like these, and one line below.
"""

from __future__ import annotations

import datetime as dt
from typing import Protocol

import luigi

from luigi_tasks.catalog import ZONES, Dataset, service
from luigi_tasks.lake import LakeEntry
from luigi_tasks.tasks.azure import AzureSink
from luigi_tasks.tasks.bigquery import BigQuerySink
from luigi_tasks.tasks.duckdb import DuckDBSink
from luigi_tasks.tasks.gcs import GcsSink
from luigi_tasks.tasks.lake import LakeSink, lake_entries
from luigi_tasks.tasks.postgres import PostgresSink
from luigi_tasks.tasks.s3 import S3Sink


class Sink(Protocol):
    name: str

    def month_task(self, service: str, month: dt.date, reload: bool = False) -> luigi.Task:
        """The task that puts one month of a service here."""

    def zones_task(self, reload: bool = False) -> luigi.Task:
        """The task that puts the zone lookup here."""

    def done(self, dataset: Dataset, entries: dict[dt.date | None, LakeEntry]) -> set[dt.date | None]:
        """Which of the lake's complete files (month -> entry; None for the zone lookup) are here, current."""

    def held(self, dataset: Dataset, months: list[dt.date | None]) -> set[dt.date | None]:
        """Which of these months are here from whichever lake file (one round trip): a month held but not done
        is out of date (the lake's file was redone since)."""


SINKS: dict[str, Sink] = {
    sink.name: sink
    for sink in (LakeSink(), PostgresSink(), DuckDBSink(), GcsSink(), BigQuerySink(), S3Sink(), AzureSink())
}


def sink_task(sink: str, service_name: str | None, month: dt.date | None, reload: bool = False) -> luigi.Task:
    """A month's task in a sink, or the zone lookup's when `month` is None."""
    if month is None:
        return SINKS[sink].zones_task(reload=reload)
    return SINKS[sink].month_task(service_name, month, reload=reload)


def done_by_sink(
    dataset: Dataset, months: list[dt.date | None], sinks: tuple[str, ...]
) -> tuple[dict[dt.date | None, LakeEntry], dict[str, set[dt.date | None]]]:
    """The lake's entries for these months and, per sink, the months done there: one round trip per sink."""
    entries = lake_entries(dataset, months)
    return entries, {sink: SINKS[sink].done(dataset, entries) for sink in sinks}


def rows_by_sink(months: list[tuple[str, dt.date]], sinks: tuple[str, ...]) -> dict[str, int]:
    """Rows now in each sink for these (service, month) pairs: a done month holds its manifest's rows.

    Asked of the lake and the sinks, not of any machine's run history, so every worker gives the same answer.
    """
    totals = dict.fromkeys(sinks, 0)
    by_service: dict[str, list[dt.date]] = {}
    for name, month in months:
        by_service.setdefault(name, []).append(month)
    for name, service_months in by_service.items():
        entries, done = done_by_sink(service(name), service_months, sinks)
        for sink in sinks:
            totals[sink] += sum(entries[month].manifest.rows_out for month in done[sink])
    return totals


def zones_done(sinks: tuple[str, ...]) -> dict[str, bool]:
    entries, done = done_by_sink(ZONES, [None], sinks)
    return {sink: None in done[sink] for sink in sinks}
