"""Tasks that fill the local lake: download a month as published, convert it to canonical Parquet."""

from __future__ import annotations

import functools
import logging
import time
from pathlib import Path

import luigi

from luigi_tasks import config
from luigi_tasks.catalog import ZONES, Dataset, plan_columns
from luigi_tasks.convert import to_canonical_parquet
from luigi_tasks.download import download, payload_kind, redact_url
from luigi_tasks.lake import canonical_path, raw_path
from luigi_tasks.tasks.base import MonthTask, PipelineTask

log = logging.getLogger("luigi-interface")


def _download(task: PipelineTask, dataset: Dataset, url: str, where: str) -> None:
    tlc = config.tlc()
    check_header = functools.partial(
        plan_columns, dataset, where=f"{where} ({url})", unknown_columns=tlc.unknown_columns
    )
    task.set_status_message(f"downloading {redact_url(url)}")
    started = time.monotonic()
    size = download(
        url,
        Path(task.output().path),
        label=where,
        check_header=check_header,
        retries=tlc.retries,
        retry_backoff=tlc.retry_backoff,
        timeout=tlc.timeout,
        progress=task.progress_reporter(),
    )
    shown = f"{size / 1e6:,.1f} MB" if size >= 100_000 else f"{size:,} bytes"
    log.info("%s: downloaded %s from %s in %.1f s", where, shown, redact_url(url), time.monotonic() - started)


def _convert(task: PipelineTask, download_task: luigi.Task, dataset: Dataset, month) -> None:
    raw = Path(download_task.output().path)
    manifest = to_canonical_parquet(
        raw,
        Path(task.output().path),
        dataset=dataset,
        month=month,
        source_url=download_task.url,
        row_group_rows=config.lake().row_group_rows,
        unknown_columns=config.tlc().unknown_columns,
        progress=task.progress_reporter(unit="rows", scale=1),
    )
    task.rows = manifest.rows_out
    summary = f"{manifest.rows_out:,} rows"
    if month is not None:
        summary += f", {manifest.rows_outside_month:,} with pickup outside the month"
    task.set_status_message(summary)
    log.info("%s: %s -> %s", task.output().path, summary, raw.name)
    if not config.lake().keep_raw:
        raw.unlink(missing_ok=True)


class DownloadTripData(MonthTask):
    """Downloads one month of a service as published, to {lake}/raw/{service}/.

    The source family ([tlc] source: csv or parquet) and its URL template come from luigi.cfg.
    """

    @property
    def url(self) -> str:
        return config.tlc().url_for(self.service, f"{self.month:%Y}", f"{self.month:%m}")

    def output(self) -> luigi.LocalTarget:
        root = config.lake().path
        return luigi.LocalTarget(str(raw_path(root, self.dataset, self.month, payload_kind(self.url))))

    def run(self) -> None:
        _download(self, self.dataset, self.url, self.label)


class ToParquet(MonthTask):
    """Converts one downloaded month into {lake}/{service}/{year}/{service}_tripdata_{year}-{month}.parquet.

    The file has the catalogue's schema for the service and a manifest in its footer metadata.
    """

    def requires(self) -> DownloadTripData:
        return DownloadTripData(service=self.service, month=self.month)

    def output(self) -> luigi.LocalTarget:
        return luigi.LocalTarget(str(canonical_path(config.lake().path, self.dataset, self.month)))

    def run(self) -> None:
        _convert(self, self.requires(), self.dataset, self.month)


class DownloadZones(PipelineTask):
    """Downloads the taxi zone lookup CSV to {lake}/raw/zones/."""

    @property
    def url(self) -> str:
        return config.tlc().zones_url

    def output(self) -> luigi.LocalTarget:
        return luigi.LocalTarget(str(raw_path(config.lake().path, ZONES, None, payload_kind(self.url))))

    def run(self) -> None:
        _download(self, ZONES, self.url, "zone lookup")


class ZonesToParquet(PipelineTask):
    """Writes the zone lookup to {lake}/zones/taxi_zone_lookup.parquet ("NA" and "N/A" stay strings)."""

    def requires(self) -> DownloadZones:
        return DownloadZones()

    def output(self) -> luigi.LocalTarget:
        return luigi.LocalTarget(str(canonical_path(config.lake().path, ZONES, None)))

    def run(self) -> None:
        _convert(self, self.requires(), ZONES, None)
