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


# The TLC's fhvhv Parquet of 2023-02 on, as its footer has it: ids int32, text large_string, times timestamp[us].
_FHVHV_TLC_FIELDS = [
    ("hvfhs_license_num", pa.large_string()),
    ("dispatching_base_num", pa.large_string()),
    ("originating_base_num", pa.large_string()),
    ("request_datetime", pa.timestamp("us")),
    ("on_scene_datetime", pa.timestamp("us")),
    ("pickup_datetime", pa.timestamp("us")),
    ("dropoff_datetime", pa.timestamp("us")),
    ("PULocationID", pa.int32()),
    ("DOLocationID", pa.int32()),
    ("trip_miles", pa.float64()),
    ("trip_time", pa.int64()),
    ("base_passenger_fare", pa.float64()),
    ("tolls", pa.float64()),
    ("bcf", pa.float64()),
    ("sales_tax", pa.float64()),
    ("congestion_surcharge", pa.float64()),
    ("airport_fee", pa.float64()),
    ("tips", pa.float64()),
    ("driver_pay", pa.float64()),
    ("shared_request_flag", pa.large_string()),
    ("shared_match_flag", pa.large_string()),
    ("access_a_ride_flag", pa.large_string()),
    ("wav_request_flag", pa.large_string()),
    ("wav_match_flag", pa.large_string()),
]
FHVHV_TLC_SCHEMA = pa.schema(_FHVHV_TLC_FIELDS)


def _choice(rng: np.random.Generator, values: list[str], rows: int, type_: pa.DataType) -> pa.Array:
    return pa.array(np.asarray(values, dtype=object)[rng.integers(0, len(values), rows)], type_)


def fhvhv_tlc_table(month: dt.date, rows: int, rng: np.random.Generator) -> pa.Table:
    """`rows` fhvhv trips typed as the TLC's own Parquet of 2023-02 on (FHVHV_TLC_SCHEMA)."""
    start = np.datetime64(dt.datetime(month.year, month.month, 1), "us")
    span = int((np.datetime64(next_month(month), "us") - start).astype(np.int64))
    pickup = start + rng.integers(0, span, rows).astype("timedelta64[us]")
    seconds = rng.integers(60, 3_600, rows)
    fare = np.round(rng.gamma(2.0, 10.0, rows), 2)
    text, flags = pa.large_string(), ["N", "N", "N", "Y"]
    columns = {
        "hvfhs_license_num": _choice(rng, ["HV0003", "HV0005"], rows, text),
        "dispatching_base_num": _choice(rng, ["B03404", "B03406", "B02764"], rows, text),
        "originating_base_num": _choice(rng, ["B03404", "B03406", None], rows, text),
        "request_datetime": pa.array(pickup - rng.integers(60_000_000, 600_000_000, rows).astype("timedelta64[us]")),
        "on_scene_datetime": pa.array(pickup - rng.integers(0, 60_000_000, rows).astype("timedelta64[us]")),
        "pickup_datetime": pa.array(pickup),
        "dropoff_datetime": pa.array(pickup + (seconds * 1_000_000).astype("timedelta64[us]")),
        "PULocationID": pa.array(rng.integers(1, 266, rows, dtype=np.int32)),
        "DOLocationID": pa.array(rng.integers(1, 266, rows, dtype=np.int32)),
        "trip_miles": pa.array(np.round(rng.gamma(2.0, 2.5, rows), 3)),
        "trip_time": pa.array(seconds),
        "base_passenger_fare": pa.array(fare),
        "tolls": pa.array(np.where(rng.random(rows) < 0.05, 6.94, 0.0)),
        "bcf": pa.array(np.round(fare * 0.025, 2)),
        "sales_tax": pa.array(np.round(fare * 0.08875, 2)),
        "congestion_surcharge": pa.array(np.where(rng.random(rows) < 0.3, 2.75, 0.0)),
        "airport_fee": pa.array(np.where(rng.random(rows) < 0.05, 2.5, 0.0)),
        "tips": pa.array(np.where(rng.random(rows) < 0.2, np.round(fare * 0.15, 2), 0.0)),
        "driver_pay": pa.array(np.round(fare * 0.75, 2)),
    }
    for flag in (
        "shared_request_flag",
        "shared_match_flag",
        "access_a_ride_flag",
        "wav_request_flag",
        "wav_match_flag",
    ):
        columns[flag] = _choice(rng, flags, rows, text)
    return pa.Table.from_arrays(
        [columns[name].cast(type_) for name, type_ in _FHVHV_TLC_FIELDS], schema=FHVHV_TLC_SCHEMA
    )


def write_fhvhv_tlc_parquet(
    path: Path, month: dt.date, rows: int, *, seed: int = 0, row_group_rows: int = 1 << 20
) -> Path:
    """Write a seeded fhvhv month shaped as the TLC's own files (snappy, `row_group_rows` rows a row group; pandas
    writes one row group per file: pass `rows`), generated a row group at a time so memory stays bounded."""
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    with pq.ParquetWriter(path, FHVHV_TLC_SCHEMA, compression="snappy") as writer:
        for first in range(0, rows, row_group_rows):
            group_rows = min(row_group_rows, rows - first)
            pieces = [
                fhvhv_tlc_table(month, min(1 << 20, group_rows - done), rng) for done in range(0, group_rows, 1 << 20)
            ]
            writer.write_table(pa.concat_tables(pieces), row_group_size=group_rows)
    return path


# Where 2009's taxis went, roughly: mostly Manhattan, some airports, a few points nowhere (0, 0: "unknown").
_MIDTOWN, _AIRPORTS = (-73.982, 40.755), ((-73.7781, 40.6413), (-73.8740, 40.7769))


def _yellow_2009_points(rng: np.random.Generator, rows: int) -> tuple[np.ndarray, np.ndarray]:
    share = rng.random(rows)
    lon = rng.normal(_MIDTOWN[0], 0.008, rows)
    lat = rng.normal(_MIDTOWN[1], 0.012, rows)
    airport = (share > 0.85) & (share <= 0.95)
    which = rng.integers(0, 2, rows)
    lon[airport] = np.array([a[0] for a in _AIRPORTS])[which[airport]] + rng.normal(0, 0.003, int(airport.sum()))
    lat[airport] = np.array([a[1] for a in _AIRPORTS])[which[airport]] + rng.normal(0, 0.003, int(airport.sum()))
    unknown = share > 0.98
    lon[unknown], lat[unknown] = 0.0, 0.0
    return lon, lat


def yellow_2009_table(month: dt.date, rows: int, rng: np.random.Generator, with_zone_ids: bool = False) -> pa.Table:
    """`rows` yellow trips laid out as the TLC's 2009 Parquet (text times, vendor and payment names, coordinates);
    with_zone_ids adds PULocationID and DOLocationID, so that the same rows convert without the zone lookup."""
    start = np.datetime64(dt.datetime(month.year, month.month, 1), "s")
    seconds = int((np.datetime64(next_month(month), "s") - start).astype(int))
    pickup = start + rng.integers(0, seconds, rows)
    dropoff = pickup + rng.integers(60, 3_600, rows)
    start_lon, start_lat = _yellow_2009_points(rng, rows)
    end_lon, end_lat = _yellow_2009_points(rng, rows)
    fare = np.round(rng.gamma(2.0, 5.0, rows), 2)
    columns = {
        "vendor_name": _choice(rng, ["VTS", "CMT", "DDS"], rows, pa.string()),
        "Trip_Pickup_DateTime": pc.strftime(pa.array(pickup), format="%Y-%m-%d %H:%M:%S"),
        "Trip_Dropoff_DateTime": pc.strftime(pa.array(dropoff), format="%Y-%m-%d %H:%M:%S"),
        "Passenger_Count": pa.array(rng.integers(1, 6, rows)),
        "Trip_Distance": pa.array(np.round(rng.gamma(2.0, 1.5, rows), 2)),
        "Start_Lon": pa.array(start_lon),
        "Start_Lat": pa.array(start_lat),
        "Rate_Code": pa.nulls(rows, pa.float64()),
        "store_and_forward": pa.nulls(rows, pa.float64()),
        "End_Lon": pa.array(end_lon),
        "End_Lat": pa.array(end_lat),
        "Payment_Type": _choice(rng, ["CASH", "Credit", "CASH", "No Charge", "Dispute"], rows, pa.string()),
        "Fare_Amt": pa.array(fare),
        "surcharge": pa.array(np.where(rng.random(rows) < 0.4, 0.5, 0.0)),
        "mta_tax": pa.nulls(rows, pa.float64()),
        "Tip_Amt": pa.array(np.where(rng.random(rows) < 0.3, np.round(fare * 0.2, 2), 0.0)),
        "Tolls_Amt": pa.array(np.where(rng.random(rows) < 0.03, 4.15, 0.0)),
        "Total_Amt": pa.array(np.round(fare * 1.1, 2)),
    }
    if with_zone_ids:
        columns["PULocationID"] = pa.array(rng.integers(1, 264, rows))
        columns["DOLocationID"] = pa.array(rng.integers(1, 264, rows))
    return pa.table(columns)


def write_yellow_2009_parquet(
    path: Path, month: dt.date, rows: int, *, seed: int = 0, with_zone_ids: bool = False, chunk_rows: int = 1 << 20
) -> Path:
    """Write a seeded yellow month laid out as the TLC's 2009 files, `chunk_rows` rows a row group."""
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    writer = None
    try:
        for first in range(0, rows, chunk_rows):
            table = yellow_2009_table(month, min(chunk_rows, rows - first), rng, with_zone_ids)
            writer = writer or pq.ParquetWriter(path, table.schema, compression="snappy")
            writer.write_table(table)
    finally:
        if writer:
            writer.close()
    return path
