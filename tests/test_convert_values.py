"""Values that used to change on the way into the canonical Parquet: zone-aware times, integer codes above 2^53."""

from __future__ import annotations

import datetime as dt

import luigi
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from luigi_tasks import ToParquet, convert
from luigi_tasks.catalog import FHV, TIME, YELLOW
from luigi_tasks.convert import read_manifest, to_canonical_parquet
from luigi_tasks.errors import DataError
from luigi_tasks.synthetic import write_trip_csv
from tests.conftest import (
    PARQUET_PATH,
    ZONE_FILES,
    ZONES_PATH,
    files_under,
    luigi_settings,
    month,
    month_path,
    run_tasks,
    serve_zones,
)

NEW_YORK = "America/New_York"


def _convert(raw, tmp_path, dataset=YELLOW, at="2021-01"):
    dest = tmp_path / "out" / f"{raw.stem}.parquet"
    manifest = to_canonical_parquet(raw, dest, dataset=dataset, month=month(at), source_url="x")
    return pq.read_table(dest), manifest


def _zoned(table: pa.Table, unit: str, tz: str) -> pa.Table:
    """The canonical table with its New York wall-clock times written as zone-aware instants in `tz`."""
    for i, field in enumerate(table.schema):
        if field.type == TIME:
            instants = pc.assume_timezone(table.column(i), NEW_YORK).cast(pa.timestamp(unit, tz=tz))
            table = table.set_column(i, pa.field(field.name, instants.type), instants)
    return table


def test_utc_instants_become_new_york_wall_clock_times(tmp_path):
    utc = pa.timestamp("us", tz="UTC")
    instants = [dt.datetime(2021, 1, 1, 5, 0), dt.datetime(2021, 3, 14, 7, 30), dt.datetime(2021, 11, 7, 6, 30), None]
    raw = tmp_path / "fhv_tripdata_2021-01.parquet"
    pq.write_table(
        pa.table(
            {
                "dispatching_base_num": ["B1", "B2", "B3", "B4"],
                "pickup_datetime": pa.array(instants, utc),
                "dropOff_datetime": pa.array(instants, utc),
                "PUlocationID": [1, 2, 3, 4],
                "DOlocationID": [5, 6, 7, 8],
            }
        ),
        raw,
    )
    table, manifest = _convert(raw, tmp_path, FHV)
    assert table.schema == FHV.schema
    # 05:00Z is midnight in New York (EST); 07:30Z on the day DST starts is 03:30 EDT; 06:30Z as DST ends, 01:30 EST.
    expected = [dt.datetime(2021, 1, 1), dt.datetime(2021, 3, 14, 3, 30), dt.datetime(2021, 11, 7, 1, 30), None]
    assert table["pickup_datetime"].to_pylist() == expected
    assert table["dropoff_datetime"].to_pylist() == expected
    assert (manifest.rows_in, manifest.rows_out, manifest.rows_outside_month) == (4, 4, 2)
    assert manifest.min_pickup == "2021-01-01 00:00:00"


@pytest.mark.parametrize(("unit", "tz"), [("us", "UTC"), ("ns", NEW_YORK), ("ms", "Europe/Paris")])
def test_zone_aware_source_gives_the_same_file_as_a_naive_one(tmp_path, unit, tz):
    naive = tmp_path / "naive" / "yellow_tripdata_2021-01.parquet"
    naive.parent.mkdir()
    pq.write_table(_convert(write_trip_csv(tmp_path / "y.csv", YELLOW, month("2021-01"), 5_000, seed=4), tmp_path)[0],
                   naive)  # fmt: skip
    expected, expected_manifest = _convert(naive, tmp_path / "a")
    zoned = tmp_path / "zoned" / "yellow_tripdata_2021-01.parquet"
    zoned.parent.mkdir()
    pq.write_table(_zoned(expected, unit, tz), zoned)
    table, manifest = _convert(zoned, tmp_path / "b")
    assert table.equals(expected)
    assert (manifest.rows_out, manifest.rows_outside_month, manifest.min_pickup, manifest.max_pickup) == (
        expected_manifest.rows_out,
        expected_manifest.rows_outside_month,
        expected_manifest.min_pickup,
        expected_manifest.max_pickup,
    )


def test_zone_aware_parquet_through_the_graph(tmp_path, server):
    canonical = _convert(write_trip_csv(tmp_path / "y.csv", YELLOW, month("2021-01"), 2_000, seed=5), tmp_path)[0]
    sink = pa.BufferOutputStream()
    pq.write_table(_zoned(canonical, "us", "UTC"), sink)
    server.add(month_path(PARQUET_PATH, "yellow", "2021-01"), sink.getvalue().to_pybytes())
    serve_zones(server)
    settings = {
        ("tlc", "zones_url"): server.base_url + ZONES_PATH,
        ("tlc", "source"): "parquet",
        ("tlc", "parquet_url"): server.base_url + PARQUET_PATH,
        ("lake", "root"): str(tmp_path / "lake"),
        ("history", "path"): str(tmp_path / "history.sqlite"),
    }
    with luigi_settings(settings):
        task = ToParquet(service="yellow", month=month("2021-01"))
        result, failures = run_tasks(task)
        assert failures == {} and result.status == luigi.LuigiStatusCode.SUCCESS
        assert pq.read_table(task.output().path).equals(canonical)
        assert read_manifest(task.output().path).rows_out == 2_000
    assert files_under(tmp_path / "lake") == sorted([
        "raw/yellow/_yellow_tripdata_2021-01.parquet.json",
        "raw/yellow/yellow_tripdata_2021-01.parquet",
        "yellow/2021/_yellow_tripdata_2021-01.json",
        "yellow/2021/yellow_tripdata_2021-01.parquet",
        *ZONE_FILES,
    ])  # fmt: skip


BIG = 2**53 + 1  # 9007199254740993: the first integer a float64 cannot hold


def _csv_with_codes(tmp_path, codes: list[str]):
    """A yellow month whose VendorID column holds these texts (the other columns as the generator wrote them)."""
    lines = write_trip_csv(tmp_path / "y.csv", YELLOW, month("2021-01"), len(codes), seed=6).read_text().splitlines()
    header = lines[0].split(",")
    column = header.index("VendorID")
    rows = []
    for line, code in zip(lines[1:], codes, strict=True):
        fields = line.split(",")
        fields[column] = code
        rows.append(",".join(fields))
    raw = tmp_path / "yellow_tripdata_2021-01.csv"
    raw.write_text("\n".join([lines[0], *rows]) + "\n")
    return raw


@pytest.mark.parametrize(
    ("codes", "expected"),
    [
        ([str(BIG), "", "-" + str(BIG), str(2**63 - 1), "2"], [BIG, None, -BIG, 2**63 - 1, 2]),
        ([str(BIG), "1.0", "", " 3 ", "4.000", str(BIG) + ".0", "1e16"], [BIG, 1, None, 3, 4, BIG, 10**16]),
        (["1.0", "", " 3 ", "4.000", "265"], [1, None, 3, 4, 265]),
    ],
    ids=["plain-integers", "with-float-spellings", "small-float-spellings"],
)
def test_integer_codes_above_2_to_the_53_survive_exactly(tmp_path, codes, expected):
    table, manifest = _convert(_csv_with_codes(tmp_path, codes), tmp_path)
    assert table["VendorID"].to_pylist() == expected
    assert (manifest.rows_in, manifest.rows_out) == (len(codes), len(codes))


# 2^52 + 0.5 and 2^53 + 1.5 are whole numbers once rounded to float64.
@pytest.mark.parametrize("bad", ["1.5", str(2**52) + ".5", str(BIG) + ".5", "1e400", "x"])
def test_a_fractional_or_non_numeric_code_names_the_column_and_leaves_nothing(tmp_path, bad):
    raw = _csv_with_codes(tmp_path, [str(BIG), bad, "1"])
    with pytest.raises(DataError) as error:
        _convert(raw, tmp_path)
    assert str(error.value) == f"yellow 2021-01 ({raw}): line 3: column VendorID: {bad!r} is not an integer (int64)"
    assert files_under(tmp_path / "out") == []


def _late_code(tmp_path, monkeypatch, code: str):
    """1,000 rows with `code` at row 900, read in pieces of 4 KiB (about 40 rows): the parallel reader passes on
    the first pieces before it meets that row, where the exact reader takes over."""
    monkeypatch.setattr(convert, "CSV_PIECE_BYTES", 4096)
    codes = [f"{n % 7}.0" for n in range(1_000)]
    codes[900] = code
    return _csv_with_codes(tmp_path, codes)


def test_a_late_code_too_big_for_float64_loses_and_repeats_no_row(tmp_path, monkeypatch):
    table, manifest = _convert(_late_code(tmp_path, monkeypatch, str(BIG)), tmp_path)
    expected = [n % 7 for n in range(1_000)]
    expected[900] = BIG
    assert table["VendorID"].to_pylist() == expected
    assert (manifest.rows_in, manifest.rows_out) == (1_000, 1_000)


def test_a_late_fractional_code_names_its_line_and_leaves_nothing(tmp_path, monkeypatch):
    raw = _late_code(tmp_path, monkeypatch, "1.5")
    with pytest.raises(DataError) as error:
        _convert(raw, tmp_path)
    assert str(error.value) == f"yellow 2021-01 ({raw}): line 902: column VendorID: '1.5' is not an integer (int64)"
    assert files_under(tmp_path / "out") == []
