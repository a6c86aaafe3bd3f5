"""The task a user runs: one month of one service into every sink asked for."""

from __future__ import annotations

import luigi

from luigi_tasks import summary
from luigi_tasks.errors import SourceError
from luigi_tasks.tasks.base import CommaListParameter, MonthTask, log
from luigi_tasks.tasks.lake import not_published_yet, refresh_months
from luigi_tasks.tasks.sinks import SINKS, rows_by_sink, sink_task


class SinksParameter(CommaListParameter):
    """A comma-separated list of sinks, e.g. `lake` or `lake,postgres`."""

    expected = f"one or more of {', '.join(SINKS)}, separated by commas"

    def check(self, names: tuple[str, ...]) -> tuple[str, ...]:
        if not names or any(n not in SINKS for n in names):
            raise ValueError(names)
        return names


class IngestMonth(MonthTask, luigi.WrapperTask):
    """One month of a service in every sink asked for (default: the local lake only).

    lake: the canonical Parquet under [lake] root and the zone lookup beside it.
    postgres: the month in {service}_tripdata and the lookup in zones, at [postgres] dsn.
    gcs: the lake's files in gs://[gcp] bucket/[gcp] prefix/, verified by crc32c.
    bigquery: the month in [gcp] dataset.{service}_tripdata, the lookup in zones (loaded from GCS).
    s3: a mirror of the lake's files in s3://[s3] bucket/[s3] prefix/, verified by ETag.
    azure: a mirror of the lake's files in Azure Blob Storage, [azure] container/[azure] prefix/, verified by MD5.
    duckdb: the month in prod.{service}_tripdata and the lookup in prod.zones of [duckdb] path.

    A month the source has not published yet (source.py) is done for now: nothing runs and nothing fails.
    --refresh asks the source first whether the month's file changed since the lake fetched it, and if it did,
    the month is done again: download, conversion, and every sink (each reloads it once, the lake's file being
    new). A month the source served before and no longer has is a failure; the lake and the sinks keep it.
    """

    sinks = SinksParameter(default=("lake",), description="Where the month goes: " + ", ".join(SINKS))
    reload = luigi.BoolParameter(
        default=False,
        significant=False,
        visibility=luigi.parameter.ParameterVisibility.HIDDEN,
        description="Put the month into every sink asked for again, replacing it",
    )
    refresh = luigi.BoolParameter(
        default=False,
        significant=False,
        visibility=luigi.parameter.ParameterVisibility.HIDDEN,  # a way to run, like reload
        description="Ask the source whether the month's file changed since it was fetched; if so, do it again "
        "(download, conversion, every sink)",
    )
    gone: str | None = None  # why the source no longer has a month the lake holds (a refresh found it)

    def is_complete(self) -> bool:
        self.gone = None
        if self.refresh:
            changed, gone = refresh_months(self.dataset, [self.month], redo=True)
            for change in changed.values():
                summary.note_month(self.service, self.month, summary.CHANGED_AT_SOURCE, change)
            self.gone = gone.get(self.month)
            if self.gone:
                return False  # run() fails, saying so
        if not_published_yet(self.dataset, [self.month]):
            summary.note_month(self.service, self.month, summary.NOT_PUBLISHED_YET)
            return True
        return super().is_complete()

    def requires(self) -> list[luigi.Task]:
        tasks = []
        for sink in self.sinks:
            tasks += [sink_task(sink, self.service, self.month, self.reload), sink_task(sink, None, None)]
        return tasks

    def run(self) -> None:
        if self.gone:
            raise SourceError(
                f"{self.gone}, though the lake has it from there: the lake and the sinks keep it as it was"
            )
        rows = rows_by_sink([(self.service, self.month)], self.sinks)
        log.info("%s: %s", self.label, ", ".join(f"{sink} {n:,} rows" for sink, n in rows.items()))
