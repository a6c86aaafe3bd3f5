"""The Azure sink: a mirror of the lake's canonical files in [azure] container/[azure] prefix/, from any lake.

When the lake itself is in that container, its files already are there: the sink adds nothing and says so.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import luigi

from luigi_tasks import config
from luigi_tasks.catalog import Dataset
from luigi_tasks.errors import DataError
from luigi_tasks.lake import LakeEntry, canonical_key
from luigi_tasks.lazy import lazy_module
from luigi_tasks.tasks.base import MonthTask, ZonesTask
from luigi_tasks.tasks.gcs import checked_prefix, mirror_name
from luigi_tasks.tasks.lake import MirrorUpload, lake_entries, lake_task, say_mirror_adds_nothing

azure = lazy_module("luigi_tasks.azure")


def blob_name(key: str) -> str:
    return mirror_name(checked_prefix(config.azure().prefix, "[azure] prefix"), key)


def container() -> str:
    name = config.azure().container
    if not name:
        raise DataError("[azure] container '' is empty: expected the name of an existing container")
    return name


def service():
    """The official client of [azure] account (or the account Azure's variables name)."""
    return azure.client(azure.account(config.azure().account))


def lake_is_in_container() -> bool:
    """Whether the lake is in the mirror's container: then the mirror would copy files onto themselves."""
    lake = config.lake().open()
    return lake.kind == "azure" and lake.bucket == config.azure().container


class BlobTarget(luigi.Target):
    """Exists when container/name holds the bytes of the lake's file (the size and MD5 its manifest recorded)."""

    def __init__(self, container: str, name: str, source: luigi.Target) -> None:
        self.container, self.name, self.source = container, name, source

    @property
    def uri(self) -> str:
        return f"az://{self.container}/{self.name}"

    def exists(self) -> bool:
        entry = self.source.entry()
        if entry is None:
            return False
        stored = azure.stored_blob(service(), self.container, self.name)
        return stored is not None and stored.holds(entry.file)


class _UploadToAzure(MirrorUpload):
    """Body of UploadToAzure and UploadZonesToAzure."""

    def output(self) -> BlobTarget:
        return BlobTarget(container(), blob_name(canonical_key(self.dataset, self.month)), self.input())

    def upload(self, path: Path, target: BlobTarget) -> bool:
        return azure.upload_file(service(), path, target.container, target.name, progress=self.progress_reporter())


class UploadToAzure(MonthTask, _UploadToAzure):
    """Mirrors a month's canonical Parquet to {container}/{prefix}/{service}/{year}/ (blocks committed whole, MD5)."""


class UploadZonesToAzure(ZonesTask, _UploadToAzure):
    """Mirrors the zone lookup's Parquet to {container}/{prefix}/zones/."""


class AzureSink:
    name = "azure"

    def month_task(self, service: str, month: dt.date, reload: bool = False) -> luigi.Task:
        if lake_is_in_container():
            say_mirror_adds_nothing("azure")
            return lake_task(service, month)
        return UploadToAzure(service=service, month=month, reload=reload)

    def zones_task(self, reload: bool = False) -> luigi.Task:
        return lake_task(None, None) if lake_is_in_container() else UploadZonesToAzure(reload=reload)

    def _stored(self, dataset: Dataset) -> dict:
        return azure.stored_fingerprints(service(), container(), blob_name(dataset.name) + "/")

    def done(self, dataset: Dataset, entries: dict[dt.date | None, LakeEntry]) -> set[dt.date | None]:
        """One listing of the mirror's folder, compared with the size and MD5 each manifest recorded."""
        if lake_is_in_container():
            return set(entries)
        stored = self._stored(dataset)
        return {
            month
            for month, entry in entries.items()
            if (blob := stored.get(blob_name(canonical_key(dataset, month)))) is not None and blob.holds(entry.file)
        }

    def held(self, dataset: Dataset, months: list[dt.date | None]) -> set[dt.date | None]:
        """Months with a blob in the mirror, whatever its bytes: one listing."""
        if lake_is_in_container():
            return set(lake_entries(dataset, months))
        stored = self._stored(dataset)
        return {month for month in months if blob_name(canonical_key(dataset, month)) in stored}
