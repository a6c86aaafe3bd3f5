"""Quality of a month: known defects are counted exactly, warned about or refused by the [quality] levels."""

from __future__ import annotations

import json
import re

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv
import pytest

from luigi_tasks import ToParquet, config
from luigi_tasks.catalog import FHV, YELLOW
from luigi_tasks.convert import Manifest, to_canonical_parquet
from luigi_tasks.errors import DataError
from luigi_tasks.lake import LakeEntry
from luigi_tasks.quality import Finding, Limits, QualityCounter, row_change
from luigi_tasks.synthetic import trip_table
from tests.conftest import (
    DATA,
    ZONE_FILES,
    files_under,
    luigi_command,
    luigi_settings,
    month,
    pipeline_settings,
    run_tasks,
    serve_csv_month,
    serve_zones,
    write_config,
)

ROWS = 1_000
ZONE_IDS = pa_csv.read_csv(DATA / "taxi_zone_lookup.csv").column("LocationID").combine_chunks()
# row -> (column, value): the defects planted in an otherwise clean generated January 2021.
YELLOW_DEFECTS = {
    **{row: ("fare_amount", "-5.5") for row in range(5)},  # 5 negative amounts
    5: ("total_amount", "-1.0"),  # a sixth row with a negative amount
    10: ("total_amount", "99999.0"),  # 2 absurd amounts
    11: ("fare_amount", "5000.01"),
    20: ("trip_distance", "-0.5"),  # 1 negative distance
    **{row: ("trip_distance", "9000") for row in (21, 22, 23)},  # 3 absurd distances
    **{row: ("PULocationID", "999") for row in (30, 31, 32)},  # 4 rows with an id the lookup lacks
    33: ("DOLocationID", "0"),
    40: ("tpep_pickup_datetime", ""),  # 2 rows without a pickup
    41: ("tpep_pickup_datetime", ""),
    **{row: ("tpep_pickup_datetime", "2020-12-31 23:59:00") for row in (50, 51, 52)},  # 3 outside the month
}
YELLOW_COUNTS = {
    "negative_amount": 6,
    "absurd_amount": 2,
    "negative_distance": 1,
    "absurd_distance": 3,
    "unknown_location": 4,
}


def defective_csv(path, dataset=YELLOW, defects=YELLOW_DEFECTS, rows=ROWS, at="2021-01"):
    """A clean generated month (pickups inside it, amounts and distances sane, ids in the lookup) plus `defects`."""
    table = trip_table(dataset, month(at), rows, np.random.default_rng(3))
    pickup = [f"{at}-{1 + i % 28:02d} 10:00:00" for i in range(rows)]
    table = table.set_column(table.column_names.index(dataset.pickup_column), dataset.pickup_column, [pickup])
    columns = {name: table.column(name).to_pylist() for name in table.column_names}
    if "trip_distance" in columns:  # the generator draws amounts from one law: keep distances below 500 miles
        columns["trip_distance"] = [str(min(float(v), 400.0)) for v in columns["trip_distance"]]
    for row, (name, value) in defects.items():
        columns[name][row] = value
    text = pa.table({name: pa.array(values, pa.string()) for name, values in columns.items()})
    pa_csv.write_csv(text, path, write_options=pa_csv.WriteOptions(quoting_style="none"))
    return path


def convert(raw, dest, dataset=YELLOW, limits=None, zone_ids=ZONE_IDS):
    counter = QualityCounter(dataset, limits or Limits(), zone_ids)
    return to_canonical_parquet(raw, dest, dataset=dataset, month=month("2021-01"), source_url="x", quality=counter)


def test_known_defects_are_counted_exactly_and_warned_about(tmp_path):
    manifest = convert(defective_csv(tmp_path / "y.csv"), tmp_path / "y.parquet")
    assert (manifest.rows_out, manifest.rows_without_pickup, manifest.rows_outside_month) == (ROWS, 2, 3)
    assert manifest.quality.counts == YELLOW_COUNTS
    # Default levels: warn above 0.1% for most checks, 1% for negative amounts (refunds are normal), 0.01% for the
    # absurd ones; 1 negative distance in 1,000 is 0.1%, not above it.
    assert [f.text() for f in manifest.quality.findings] == [
        "null_pickup 2 rows (0.20%) > warn 0.001",
        "outside_month 3 rows (0.30%) > warn 0.001",
        "absurd_amount 2 rows (0.20%) > warn 0.0001",
        "absurd_distance 3 rows (0.30%) > warn 0.0001",
        "unknown_location 4 rows (0.40%) > warn 0.001",
    ]
    # What is recorded comes back from the lake's sidecar as it went in.
    assert Manifest.from_json(manifest.to_json()) == manifest


def test_a_check_over_its_fail_level_refuses_the_month_in_one_line_and_writes_nothing(tmp_path):
    raw = defective_csv(tmp_path / "y.csv")
    limits = Limits({**Limits().levels, "unknown_location": (0.001, 0.003)})
    with pytest.raises(DataError) as error:
        convert(raw, tmp_path / "out" / "y.parquet", limits=limits)
    assert str(error.value) == (
        "yellow 2021-01: quality check unknown_location failed: 4 of 1,000 rows (0.40%) > "
        "[quality] unknown_location_fail 0.003; the month is not published"
    )
    assert files_under(tmp_path / "out") == []


def test_blank_location_ids_are_not_unknown_ones_and_fhv_has_no_amount_checks(tmp_path):
    defects = {0: ("PULocationID", ""), 1: ("DOLocationID", ""), 2: ("PULocationID", "266"), 3: ("PULocationID", "")}
    manifest = convert(defective_csv(tmp_path / "f.csv", FHV, defects, rows=100), tmp_path / "f.parquet", FHV)
    assert manifest.quality.counts == {"unknown_location": 1}
    assert [f.text() for f in manifest.quality.findings] == ["unknown_location 1 row (1.00%) > warn 0.001"]


def test_a_manifest_written_before_quality_still_loads():
    old = {
        "dataset": "yellow", "month": "2020-07", "source_url": "x", "source_bytes": 10, "source_sha256": "ab",
        "rows_in": 266, "rows_out": 266, "rows_outside_month": 0, "rows_without_pickup": 0,
        "min_pickup": None, "max_pickup": None, "columns_filled_null": [], "columns_dropped": [],
    }  # fmt: skip
    assert Manifest.from_json(json.dumps(old)).quality is None
    sidecar = json.dumps({"manifest": old, "file": {"size": 1, "crc32c": "x", "s3_etag": "z"}})
    entry = LakeEntry.from_json(sidecar.encode())
    assert entry is not None and entry.manifest.rows_out == 266 and entry.manifest.quality is None


def test_row_change_month_over_month():
    limits = Limits()
    assert row_change(1_400, 1_000, limits) is None  # +40% is under the 50% warn level
    assert row_change(400, 1_000, limits) == Finding("row_change", "warn", 600, 0.6, 0.5)
    assert row_change(30, 1_000, limits) == Finding("row_change", "fail", 970, 0.97, 0.95)


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("negative_amount_warn", "-0.1", "[quality] negative_amount_warn -0.1 is out of range: expected a fraction "
         "of 0 or more"),
        ("negative_amount_fail", "0.001", "[quality] negative_amount_fail 0.001 is out of range: expected at least "
         "negative_amount_warn (0.01)"),
        ("max_amount", "0", "[quality] max_amount 0.0 is out of range: expected more than 0 dollars"),
    ],
)  # fmt: skip
def test_quality_levels_are_checked_in_one_line(key, value, message):
    with luigi_settings({("quality", key): value}), pytest.raises(DataError) as error:
        config.quality()
    assert str(error.value) == message


def test_a_refused_month_through_the_graph_publishes_nothing(lake, server, tmp_path):
    defects = {row: ("DOLocationID", "300") for row in range(60)}  # 6% of the rows: over the 5% fail level
    serve_csv_month(server, "yellow", "2021-01", defective_csv(tmp_path / "y.csv", defects=defects).read_bytes())
    serve_zones(server)
    _, failures = run_tasks(ToParquet(service="yellow", month=month("2021-01")))
    [error] = failures.values()
    [kept] = [f for f in files_under(lake) if f.startswith("raw/_refused/")]
    assert re.fullmatch(r"raw/_refused/yellow/\d{8}T\d{6}Z_yellow_tripdata_2021-01\.csv\.gz", kept)
    assert str(error) == (
        "yellow 2021-01: quality check unknown_location failed: 60 of 1,000 rows (6.00%) > "
        f"[quality] unknown_location_fail 0.05; the month is not published; the raw file is moved to {lake / kept}"
        " and the next run downloads it again"
    )
    assert files_under(lake) == sorted([kept, *ZONE_FILES])  # nothing of the month published


def test_warnings_reach_the_command_line_and_the_end_of_run_table(tmp_path, server):
    serve_csv_month(server, "yellow", "2021-01", defective_csv(tmp_path / "y.csv").read_bytes())
    serve_zones(server)
    config_file = write_config(tmp_path / "luigi.cfg", pipeline_settings(server, tmp_path / "lake"))
    done = luigi_command(["IngestMonth", "--service", "yellow", "--month", "2021-01", "--local-scheduler"], config_file)
    assert done.returncode == 0, done.stderr
    assert "WARNING: yellow 2021-01: quality: unknown_location 4 rows (0.40%) > warn 0.001" in done.stderr
    table = done.stderr[done.stderr.index("===== luigi_tasks: months in this run") :].splitlines()
    at = next(i for i, line in enumerate(table) if line.split()[:2] == ["yellow", "2021-01"])
    assert [line.strip() for line in table[at + 1 : at + 6]] == [
        "quality: null_pickup 2 rows (0.20%) > warn 0.001",
        "quality: outside_month 3 rows (0.30%) > warn 0.001",
        "quality: absurd_amount 2 rows (0.20%) > warn 0.0001",
        "quality: absurd_distance 3 rows (0.30%) > warn 0.0001",
        "quality: unknown_location 4 rows (0.40%) > warn 0.001",
    ]
    sidecar = json.loads((tmp_path / "lake/yellow/2021/_yellow_tripdata_2021-01.json").read_text())
    assert sidecar["manifest"]["quality"]["counts"] == YELLOW_COUNTS
