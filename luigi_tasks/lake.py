"""Where things live in the local lake.

{root}/{service}/{year}/{service}_tripdata_{year}-{month}.parquet   canonical Parquet
{root}/zones/taxi_zone_lookup.parquet                                the zone lookup
{root}/raw/{service}/{file as published}                             downloads, before conversion
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from luigi_tasks.catalog import Dataset


def canonical_path(root: Path, dataset: Dataset, month: dt.date | None) -> Path:
    if month is None:
        return root / dataset.name / dataset.file_name(None, ".parquet")
    return root / dataset.name / f"{month:%Y}" / dataset.file_name(month, ".parquet")


def raw_path(root: Path, dataset: Dataset, month: dt.date | None, kind: str) -> Path:
    """`kind` is the published format ('csv.gz', 'csv', 'parquet'): the raw file keeps its bytes and ending."""
    return root / "raw" / dataset.name / dataset.file_name(month, "." + kind)
