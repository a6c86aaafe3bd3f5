"""Seeded TLC-shaped trip files of any size, for tests and benchmarks.

The files look like the course's CSV backups: integer codes that pandas wrote as floats ("1.0")
with blanks where the TLC has no value, unquoted values, a few pickups outside the file's month.
Same seed, same bytes.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv

from luigi_tasks.catalog import AMOUNT, CODE, TEXT, TIME, Dataset, next_month

# Codes that are blank in some rows and so were written by pandas as floats.
_FLOAT_CODES = {"passenger_count", "RatecodeID", "payment_type", "trip_type"}
_LOCATION = {"PULocationID", "DOLocationID"}
_BLANK_SHARE = 0.02
_OUTSIDE_SHARE = 0.0005


def trip_table(
    dataset: Dataset, month: dt.date, rows: int, rng: np.random.Generator, columns: list[str] | None = None
) -> pa.Table:
    """`rows` rows with the given columns (default: the dataset's required ones) as CSV text values."""
    names = columns or [c.name for c in dataset.columns if not c.optional]
    start = np.datetime64(dt.datetime(month.year, month.month, 1), "s")
    seconds = int((np.datetime64(next_month(month), "s") - start).astype(int))
    offsets = rng.integers(0, seconds, rows)
    # A few rows start before the month, as in real files.
    outside = rng.random(rows) < _OUTSIDE_SHARE
    offsets[outside] -= rng.integers(60, 86_400 * 3, int(outside.sum()))
    pickup = start + offsets
    dropoff = pickup + rng.integers(60, 3_600, rows)
    blank = rng.random(rows) < _BLANK_SHARE
    arrays = []
    for name in names:
        column = dataset.column_for(name)
        if column is None:
            raise ValueError(f"{name} is not a {dataset.name} column")
        if column.type == TIME:
            values = dropoff if "drop" in column.name.lower() else pickup
            arrays.append(pc.strftime(pa.array(values), format="%Y-%m-%d %H:%M:%S"))
        elif column.type == CODE:
            high = 266 if column.name in _LOCATION else 7
            codes = pa.array(rng.integers(1, high, rows)).cast(pa.string())
            if column.name in _FLOAT_CODES:
                codes = pc.binary_join_element_wise(codes, pa.scalar(".0"), "")
                codes = pc.if_else(pa.array(blank), pa.scalar(None, pa.string()), codes)
            arrays.append(codes)
        elif column.type == AMOUNT:
            amounts = np.round(rng.gamma(2.0, 6.0, rows), 2)
            arrays.append(pa.array(amounts).cast(pa.string()))
        elif column.type == TEXT:
            if "base" in column.name:
                values = np.char.add("B0", rng.integers(1000, 3000, rows).astype(str))
            else:
                values = np.where(rng.random(rows) < 0.01, "Y", "N")
            arrays.append(pa.array(values, pa.string()))
        else:
            raise ValueError(f"no generator for {column.type}")
    return pa.table(arrays, names=names)


def write_trip_csv(
    path: Path,
    dataset: Dataset,
    month: dt.date,
    rows: int,
    *,
    seed: int = 0,
    columns: list[str] | None = None,
    chunk_rows: int = 250_000,
) -> Path:
    """Write a seeded CSV (gzip when `path` ends with .gz), `chunk_rows` at a time."""
    rng = np.random.default_rng(seed)
    sink = pa.CompressedOutputStream(str(path), "gzip") if str(path).endswith(".gz") else pa.OSFile(str(path), "wb")
    options = pa_csv.WriteOptions(include_header=False, quoting_style="none")
    with sink:
        for first in range(0, rows, chunk_rows):
            table = trip_table(dataset, month, min(chunk_rows, rows - first), rng, columns)
            if first == 0:
                sink.write((",".join(table.column_names) + "\n").encode())
            pa_csv.write_csv(table, sink, write_options=options)
    return path
