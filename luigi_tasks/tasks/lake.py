"""The lake sink: download a month as published, convert it to canonical Parquet with its manifest.

Each task has a zones twin (the lookup has no month); twins share one body and differ only in their key.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import time
from collections.abc import Iterator
from pathlib import Path

import luigi
import pyarrow as pa
import pyarrow.parquet as pq

from luigi_tasks import config, source
from luigi_tasks.catalog import Dataset, plan_columns
from luigi_tasks.convert import to_canonical_parquet
from luigi_tasks.download import SourceVersion, download, payload_kind, redact_url
from luigi_tasks.errors import DataError, NotPublished
from luigi_tasks.files import fingerprints_of
from luigi_tasks.lake import Lake, LakeEntry, canonical_key, entry_key, raw_key, refused_key, source_key
from luigi_tasks.quality import QualityCounter
from luigi_tasks.tasks.base import MonthTask, PipelineTask, ReloadableTask, ZonesTask, log, unless_done


class LakeFileTarget(luigi.Target):
    """Exists when the lake has the key: files appear there only once complete."""

    def __init__(self, lake: Lake, key: str) -> None:
        self.lake, self.key = lake, key

    @property
    def path(self) -> str:
        return self.lake.uri(self.key)

    def exists(self) -> bool:
        return self.lake.exists(self.key)


class CanonicalTarget(LakeFileTarget):
    """Exists when the canonical Parquet and its manifest are in the lake and the Parquet has the recorded
    size (a file cut short, or a manifest without its file, is not done)."""

    def exists(self) -> bool:
        return self.entry() is not None

    def entry(self) -> LakeEntry | None:
        return self.lake.entry(self.key)


class _Download(PipelineTask):
    """Body of DownloadTripData and DownloadZones: stream the URL into the lake's raw/ folder, and the source's
    validators of the file (ETag, Last-Modified, size) beside it, for the manifest."""

    dataset: Dataset
    month: dt.date | None

    @property
    def url(self) -> str:
        raise NotImplementedError

    def output(self) -> LakeFileTarget:
        return LakeFileTarget(config.lake().open(), raw_key(self.dataset, self.month, payload_kind(self.url)))

    @unless_done
    def run(self) -> None:
        tlc = config.tlc()
        check_header = functools.partial(
            plan_columns, self.dataset, where=f"{self.label} ({self.url})", new_columns=tlc.column_policy
        )
        self.set_status_message(f"downloading {redact_url(self.url)}")
        started = time.monotonic()
        target = self.output()
        target.lake.delete(source_key(target.key))  # a raw file downloaded again: the old one's validators go first
        with target.lake.publish(target.key) as dest:
            version = download(
                self.url,
                dest,
                label=self.label,
                check_header=check_header,
                retries=tlc.retries,
                retry_backoff=tlc.retry_backoff,
                timeout=tlc.timeout,
                progress=self.progress_reporter(),
            )
        target.lake.write_bytes(source_key(target.key), version.to_json())
        size = version.size or 0
        shown = f"{size / 1e6:,.1f} MB" if size >= 100_000 else f"{size:,} bytes"
        took = time.monotonic() - started
        log.info("%s: downloaded %s from %s in %.1f s", self.label, shown, redact_url(self.url), took)


class DownloadTripData(MonthTask, _Download):
    """Downloads one month of a service as published, to {lake}/raw/{service}/.

    The source family ([tlc] source: csv or parquet) and its URL template come from luigi.cfg.
    """

    @property
    def url(self) -> str:
        return config.tlc().url_for(self.service, f"{self.month:%Y}", f"{self.month:%m}")


class DownloadZones(ZonesTask, _Download):
    """Downloads the taxi zone lookup CSV to {lake}/raw/zones/."""

    @property
    def url(self) -> str:
        return config.tlc().zones_url


@contextlib.contextmanager
def _moved_aside_if_refused(lake: Lake, raw_key: str) -> Iterator[None]:
    """A raw file that conversion refuses (DataError) goes to raw/_refused/ and the error says where.

    Left in place, it would count as downloaded and fail every rerun the same way, even once the source is fixed.
    """
    try:
        yield
    except DataError as refused:
        kept = refused_key(raw_key, dt.datetime.now(dt.timezone.utc))
        lake.move(raw_key, kept)
        lake.delete(source_key(raw_key))
        raise DataError(
            f"{refused}; the raw file is moved to {lake.uri(kept)} and the next run downloads it again"
        ) from None


class _Convert(ReloadableTask):
    """Body of ToParquet and ZonesToParquet: the raw file from the lake -> canonical Parquet + manifest."""

    dataset: Dataset
    month: dt.date | None
    quality_warnings: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()  # values kept as NULL for want of a code, a zone, a number (Manifest.notes)
    new_columns: tuple[tuple[str, str], ...] = ()  # (name, type) of the columns the catalogue does not know

    def download(self) -> _Download:
        raise NotImplementedError

    def output(self) -> CanonicalTarget:
        return CanonicalTarget(config.lake().open(), canonical_key(self.dataset, self.month))

    def quality_counter(self) -> QualityCounter:
        return QualityCounter(self.dataset)

    @unless_done
    def run(self) -> None:
        target, raw = self.output(), self.download().output()
        lake = target.lake
        lake.delete(entry_key(target.key))  # the month is not done while its file is being replaced
        refused = _moved_aside_if_refused(lake, raw.key)
        # Validators are absent when the raw file came before they were recorded (or a run died between the two).
        version = SourceVersion.from_json(lake.read_bytes(source_key(raw.key)))
        with refused, lake.local_copy(raw.key) as raw_file, lake.publish(target.key) as dest:
            manifest = to_canonical_parquet(
                raw_file,
                dest,
                dataset=self.dataset,
                month=self.month,
                source_url=self.download().url,
                source_version=version,
                row_group_rows=config.lake().row_group_rows,
                new_columns=config.tlc().column_policy,
                progress=self.progress_reporter(unit="rows", scale=1),
                quality=self.quality_counter(),
            )
            fingerprints = fingerprints_of(dest)
        lake.write_entry(target.key, LakeEntry(manifest, fingerprints))
        self.rows = manifest.rows_out
        summary = f"{manifest.rows_out:,} rows"
        if self.month is not None:
            summary += f", {manifest.rows_outside_month:,} with pickup outside the month"
        self.set_status_message(summary)
        log.info("%s: %s -> %s", target.path, summary, raw.key.rpartition("/")[2])
        self.quality_warnings = tuple(f.text() for f in manifest.quality.findings) if manifest.quality else ()
        for warning in self.quality_warnings:
            log.warning("%s: quality: %s", self.label, warning)
        self.notes = tuple(manifest.notes())
        for line in self.notes:
            log.info("%s: %s", self.label, line)
        self.new_columns = tuple(manifest.columns_added.items())
        if self.new_columns:
            log.warning("%s: new column%s kept: %s", self.label, "s" * (len(self.new_columns) > 1),
                        manifest.new_columns_text())  # fmt: skip
        if not config.lake().keep_raw:
            lake.delete(raw.key)
            lake.delete(source_key(raw.key))


class ToParquet(MonthTask, _Convert):
    """Converts one downloaded month into {lake}/{service}/{year}/{service}_tripdata_{year}-{month}.parquet.

    The file has the catalogue's schema for the service; its manifest is in the footer metadata and, with
    the file's fingerprints, in _{service}_tripdata_{year}-{month}.json beside it. The manifest holds the rows
    failing each quality check (location ids against the lake's zone lookup); a month over a [quality] fail
    level is refused and nothing of it is published. A raw file it refuses is moved to
    {lake}/raw/_refused/{service}/, so the next run downloads the month again.
    """

    def download(self) -> DownloadTripData:
        return DownloadTripData(service=self.service, month=self.month)

    def requires(self) -> dict[str, luigi.Task]:
        # The zone lookup in the lake is what the month's location ids are checked against.
        return {"raw": self.download(), "zones": ZonesToParquet()}

    def quality_counter(self) -> QualityCounter:
        return QualityCounter(self.dataset, config.quality().limits(), zone_ids(self.input()["zones"]))


class ZonesToParquet(ZonesTask, _Convert):
    """Writes the zone lookup to {lake}/zones/taxi_zone_lookup.parquet ("NA" and "N/A" stay strings)."""

    def download(self) -> DownloadZones:
        return DownloadZones()

    def requires(self) -> DownloadZones:
        return self.download()


def zone_ids(zones: CanonicalTarget) -> pa.Array:
    """The LocationIDs of the lake's zone lookup (a few hundred values: the file is read whole)."""
    with zones.lake.open_input(zones.key) as file:
        return pq.read_table(file, columns=["LocationID"]).column("LocationID").combine_chunks()


def lake_file(entry: LakeEntry) -> str:
    """The lake file's fingerprint as a warehouse's marker records it: a month redone in the lake has another."""
    return f"{entry.file.size}:{entry.file.crc32c}"


def lake_task(service: str | None, month: dt.date | None) -> ToParquet | ZonesToParquet:
    """The canonical file of a month, or of the zone lookup when `month` is None."""
    return ZonesToParquet() if month is None else ToParquet(service=service, month=month)


def lake_is_on(kind: str) -> bool:
    """Whether the lake is on that store ('gcs', 's3', 'azure'): a mirror sink of the same store adds nothing."""
    return config.lake().open().kind == kind


@functools.cache
def say_mirror_adds_nothing(sink: str) -> None:
    log.info("the lake is already in %s (%s): the %s sink adds nothing", sink, config.lake().open().uri(), sink)


class MirrorUpload(ReloadableTask):
    """Body of a mirror sink's upload tasks: the lake's canonical file, copied whole to the mirror's target.

    A mirror names its target (`output`, with a `uri`) and how a local file goes there (`upload`)."""

    dataset: Dataset
    month: dt.date | None

    def requires(self) -> luigi.Task:
        return lake_task(getattr(self, "service", None), self.month)

    def upload(self, path: Path, target: luigi.Target) -> bool:
        """Put the file at the target unless it already holds those bytes; True if it uploaded."""
        raise NotImplementedError

    @unless_done
    def run(self) -> None:
        target, source = self.output(), self.input()
        with source.lake.local_copy(source.key) as path:
            uploaded = self.upload(path, target)
        log.info("%s: %s %s", self.label, "uploaded to" if uploaded else "already at", target.uri)


class LakeSink:
    name = "lake"

    def month_task(self, service: str, month: dt.date, reload: bool = False) -> luigi.Task:
        return ToParquet(service=service, month=month, reload=reload)

    def zones_task(self, reload: bool = False) -> luigi.Task:
        return ZonesToParquet(reload=reload)

    def done(self, dataset: Dataset, entries: dict[dt.date | None, LakeEntry]) -> set[dt.date | None]:
        """`entries` are the lake's complete files, found by one listing: those are done."""
        return set(entries)

    def held(self, dataset: Dataset, months: list[dt.date | None]) -> set[dt.date | None]:
        return set(lake_entries(dataset, months))


def lake_entries(dataset: Dataset, months: list[dt.date | None]) -> dict[dt.date | None, LakeEntry]:
    """The complete canonical files of these months (None: the zone lookup): one listing, manifests only."""
    return config.lake().open().entries({canonical_key(dataset, month): month for month in months})


def refresh_months(
    dataset: Dataset, months: list[dt.date], *, redo: bool
) -> tuple[dict[dt.date, str], dict[dt.date, str]]:
    """Ask the source about every month of `months` the lake holds (all at once): the months whose file changed
    since it was fetched (month -> what changed), each made to be done again (`redo_in_lake`) unless `redo` is
    False, and the months the source no longer has (month -> its answer), which are left as they are.

    The rule (download.SourceVersion.change_from): the ETags decide, else Last-Modified and the size; a month
    converted before validators were recorded has changed only if the source's size differs from its download's.
    """
    entries = lake_entries(dataset, months)
    answers = source.ask(dataset, sorted(month for month in entries if month is not None))
    changed, gone = {}, {}
    for month, answer in answers.items():
        if isinstance(answer, NotPublished):
            gone[month] = str(answer)
            continue
        manifest = entries[month].manifest
        change = answer.change_from(manifest.source_version, manifest.source_bytes)
        if change is None:
            continue
        changed[month] = change
        if redo:
            redo_in_lake(dataset, month)
            log.info("%s %s: changed at the source (%s): it is done again, and every sink reloads it", dataset.name,
                     f"{month:%Y-%m}", change)  # fmt: skip
    return changed, gone


def redo_in_lake(dataset: Dataset, month: dt.date) -> None:
    """Make a month be done again in the lake: its raw file (the old one) and validators go, then its manifest.

    Without the manifest the month is done neither in the lake nor in any sink (each compares its copy with the
    lake's file), so the next run downloads it, converts it, and every sink reloads it once. The old Parquet stays
    readable until the new one replaces it.
    """
    lake = config.lake().open()
    for kind in ("csv.gz", "csv", "parquet"):
        lake.delete(raw_key(dataset, month, kind))
        lake.delete(source_key(raw_key(dataset, month, kind)))
    lake.delete(entry_key(canonical_key(dataset, month)))


def not_published_yet(dataset: Dataset, months: list[dt.date]) -> list[dt.date]:
    """Those of `months` that the source has not published yet (source.not_published_yet) and the lake never had:
    a month whose Parquet is in the lake was served before, and missing it now is a failure."""
    lake, ahead = config.lake().open(), source.window()
    recent = [m for m in months if ahead[-1] <= m <= ahead[0] and not lake.exists(canonical_key(dataset, m))]
    return source.not_published_yet(dataset, recent)
