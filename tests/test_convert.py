"""Raw file -> canonical Parquet, on real TLC samples and generated months."""

from __future__ import annotations

import csv
import datetime as dt
import gzip
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from luigi_tasks.catalog import FHV, GREEN, SERVICES, YELLOW, ZONES
from luigi_tasks.convert import read_manifest, to_canonical_parquet
from luigi_tasks.errors import DataError
from luigi_tasks.files import sha256_of
from luigi_tasks.synthetic import write_trip_csv
from tests.conftest import DATA, files_under, month

YELLOW_HEAD = DATA / "yellow_tripdata_2020-07_head266.csv"
GREEN_HEAD = DATA / "green_tripdata_2019-01_head99.csv"
FHVHV_HEAD = DATA / "fhvhv_tripdata_2021-06_nyc-tlc-data-backup_head100.csv"
ZONES_CSV = DATA / "taxi_zone_lookup.csv"
# Yellow columns only 2009-2010 files fill: NULL in every later month.
COORDINATE_ERA_COLUMNS = ("pickup_longitude", "pickup_latitude", "dropoff_longitude", "dropoff_latitude", "vendor_name")


def source_rows(path: Path) -> int:
    """Data rows of a CSV, counted by Python's csv module (independently of the converter)."""
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rt", newline="", encoding="utf-8") as text:
        return sum(1 for row in csv.reader(text) if row) - 1


def convert(raw: Path, dest: Path, dataset=YELLOW, at: str | None = "2020-07", **options):
    return to_canonical_parquet(
        raw, dest, dataset=dataset, month=month(at) if at else None, source_url="http://src/" + raw.name, **options
    )


@pytest.mark.parametrize(
    ("sample", "dataset", "at"),
    [
        (YELLOW_HEAD, YELLOW, "2020-07"),
        (GREEN_HEAD, GREEN, "2019-01"),
        (FHVHV_HEAD, SERVICES["fhvhv"], "2021-06"),
        (ZONES_CSV, ZONES, None),
    ],
    ids=lambda v: getattr(v, "name", v),
)
def test_real_samples_give_the_canonical_schema_and_every_row(tmp_path, sample, dataset, at):
    dest = tmp_path / "out.parquet"
    manifest = convert(sample, dest, dataset, at)
    table = pq.read_table(dest)
    assert table.schema == dataset.schema
    assert table.num_rows == source_rows(sample) == manifest.rows_in == manifest.rows_out
    assert manifest.source_bytes == sample.stat().st_size
    assert manifest.source_sha256 == sha256_of(sample)


@pytest.mark.parametrize("path", sorted((DATA / "headers").glob("*.csv")), ids=lambda p: p.stem)
def test_every_real_header_month_converts(tmp_path, path):
    # The header files are the first KiB of each month, cut mid-row: keep the complete lines.
    data = path.read_bytes()
    whole = tmp_path / path.name
    whole.write_bytes(data[: data.rindex(b"\n") + 1])
    service, at = path.stem.split("_tripdata_")
    dest = tmp_path / "out.parquet"
    manifest = convert(whole, dest, SERVICES[service], at)
    table = pq.read_table(dest)
    assert table.schema == SERVICES[service].schema
    assert table.num_rows == source_rows(whole) == manifest.rows_out > 0
    pickup = SERVICES[service].pickup_column
    assert table.column(pickup).null_count == 0


def test_known_row_of_yellow_2020_07(tmp_path):
    dest = tmp_path / "out.parquet"
    manifest = convert(YELLOW_HEAD, dest)
    first = pq.read_table(dest).slice(0, 1).to_pylist()[0]
    assert first == {
        "VendorID": 1,
        "tpep_pickup_datetime": dt.datetime(2020, 7, 1, 0, 25, 32),
        "tpep_dropoff_datetime": dt.datetime(2020, 7, 1, 0, 33, 39),
        "passenger_count": 1,
        "trip_distance": 1.5,
        "RatecodeID": 1,
        "store_and_fwd_flag": "N",
        "PULocationID": 238,
        "DOLocationID": 75,
        "payment_type": 2,
        "fare_amount": 8.0,
        "extra": 0.5,
        "mta_tax": 0.5,
        "tip_amount": 0.0,
        "tolls_amount": 0.0,
        "improvement_surcharge": 0.3,
        "total_amount": 9.3,
        "congestion_surcharge": 0.0,
        "airport_fee": None,
        "cbd_congestion_fee": None,
        **dict.fromkeys(COORDINATE_ERA_COLUMNS),
    }
    # The head starts on 2020-07-01 but some trips picked up on 2020-06-30: kept and counted.
    table = pq.read_table(dest)
    before = pc.sum(pc.less(table["tpep_pickup_datetime"], pa.scalar(dt.datetime(2020, 7, 1)))).as_py()
    assert manifest.rows_outside_month == before > 0
    assert manifest.min_pickup == str(pc.min(table["tpep_pickup_datetime"]).as_py())
    assert manifest.columns_filled_null == ("airport_fee", "cbd_congestion_fee", *COORDINATE_ERA_COLUMNS)


def test_zone_265_and_strings_na_stay_strings(tmp_path):
    dest = tmp_path / "zones.parquet"
    convert(ZONES_CSV, dest, ZONES, None)
    zones = {row["LocationID"]: row for row in pq.read_table(dest).to_pylist()}
    assert len(zones) == 265
    assert zones[265] == {"LocationID": 265, "Borough": "Unknown", "Zone": "NA", "service_zone": "N/A"}
    assert zones[264]["Zone"] == "NV"
    assert zones[1] == {"LocationID": 1, "Borough": "EWR", "Zone": "Newark Airport", "service_zone": "EWR"}


def test_lower_cased_zone_header(tmp_path):
    convert(DATA / "broken" / "taxi_zone_lookup_dbt-seed-lowercase-header.csv", tmp_path / "a.parquet", ZONES, None)
    convert(ZONES_CSV, tmp_path / "b.parquet", ZONES, None)
    assert pq.read_table(tmp_path / "a.parquet").equals(pq.read_table(tmp_path / "b.parquet"))


def test_green_all_blank_ehail_fee_is_float64(tmp_path):
    dest = tmp_path / "green.parquet"
    convert(GREEN_HEAD, dest, GREEN, "2019-01")
    table = pq.read_table(dest)
    assert table.schema.field("ehail_fee").type == pa.float64()
    assert table["ehail_fee"].null_count == table.num_rows == 99
    assert table["congestion_surcharge"].null_count == 99  # blank strings are NULL, not ""


def test_months_with_different_spellings_read_as_one_dataset(tmp_path):
    lake = tmp_path / "fhv"
    (lake / "2019").mkdir(parents=True)
    course = tmp_path / "fhv_tripdata_2019-01.csv"
    course.write_text(
        "dispatching_base_num,pickup_datetime,dropOff_datetime,PUlocationID,DOlocationID,SR_Flag,Affiliated_base_number\n"
        "B00001,2019-01-01 00:30:00,2019-01-01 00:45:00,,,,B00001\n"
        "B00013,2019-01-01 01:00:00,2019-01-01 01:20:00,264,265,1,\n"
    )
    tlc = tmp_path / "fhv_tripdata_2019-02.csv"
    tlc.write_text(
        "dispatching_base_num,pickup_datetime,dropoff_datetime,PULocationID,DOLocationID,SR_Flag\r\n"
        "B00254,2019-02-01 00:00:00,3019-02-01 00:10:00,140,52,\r\n"
    )
    convert(course, lake / "2019" / "a.parquet", FHV, "2019-01")
    convert(tlc, lake / "2019" / "b.parquet", FHV, "2019-02")
    table = ds.dataset(lake, format="parquet").to_table()
    assert table.num_rows == 3
    assert table.schema == FHV.schema
    assert sorted(table["PULocationID"].to_pylist(), key=str) == [140, 264, None]
    # The real FHV 2019-02 has a drop-off in year 3019: nanoseconds overflow, microseconds hold it.
    assert dt.datetime(3019, 2, 1, 0, 10) in table["dropoff_datetime"].to_pylist()


def test_year_3019_pickup_is_kept_and_counted(tmp_path):
    raw = tmp_path / "fhv_tripdata_2019-02.csv"
    raw.write_text(
        "dispatching_base_num,pickup_datetime,dropoff_datetime,PULocationID,DOLocationID,SR_Flag\n"
        "B00254,3019-02-01 00:00:00,3019-02-01 00:10:00,140,52,\n"
        "B00254,2019-02-03 00:00:00,2019-02-03 00:10:00,140,52,\n"
    )
    manifest = convert(raw, tmp_path / "out.parquet", FHV, "2019-02")
    assert (manifest.rows_out, manifest.rows_outside_month) == (2, 1)
    assert manifest.max_pickup == "3019-02-01 00:00:00"


def test_generated_month_equals_a_whole_file_read(tmp_path):
    raw = write_trip_csv(tmp_path / "yellow_tripdata_2021-01.csv.gz", YELLOW, month("2021-01"), 300_000, seed=7)
    dest = tmp_path / "out.parquet"
    manifest = convert(raw, dest, YELLOW, "2021-01", row_group_rows=100_000)
    ours = pq.read_table(dest)
    assert pq.ParquetFile(dest).metadata.num_row_groups == 3
    # The reference reads the whole file at once and casts: the streaming result must be identical.
    reference = pa_csv.read_csv(raw)
    for name in reference.column_names:
        expected = reference[name].cast(YELLOW.schema.field(name).type)
        assert ours[name].equals(expected), name
    pickup = reference["tpep_pickup_datetime"].cast(pa.timestamp("us"))
    outside = pc.sum(pc.less(pickup, pa.scalar(dt.datetime(2021, 1, 1)))).as_py()
    assert manifest.rows_outside_month == outside > 0
    assert manifest.rows_out == 300_000


def test_parquet_source_is_cast_to_the_same_schema(tmp_path):
    # Shaped like the TLC's own files: int32 codes, float passenger counts, nanosecond times, Airport_fee.
    n = 4
    source = pa.table(
        {
            "VendorID": pa.array([1, 2, 2, 1], pa.int32()),
            "tpep_pickup_datetime": pa.array([dt.datetime(2023, 1, d) for d in (1, 2, 3, 4)], pa.timestamp("ns")),
            "tpep_dropoff_datetime": pa.array([dt.datetime(2023, 1, d, 1) for d in (1, 2, 3, 4)], pa.timestamp("ns")),
            "passenger_count": pa.array([1.0, None, 2.0, 1.0]),
            "trip_distance": pa.array([1.1, 2.2, 3.3, 4.4]),
            "RatecodeID": pa.array([1.0, None, 1.0, 99.0]),
            "store_and_fwd_flag": pa.array(["N", None, "N", "Y"], pa.large_string()),
            "PULocationID": pa.array([1, 2, 3, 4], pa.int32()),
            "DOLocationID": pa.array([4, 3, 2, 1], pa.int32()),
            "payment_type": pa.array([1, 0, 2, 1], pa.int64()),
            **{name: pa.array([1.0] * n) for name in (
                "fare_amount", "extra", "mta_tax", "tip_amount", "tolls_amount",
                "improvement_surcharge", "total_amount", "congestion_surcharge", "Airport_fee")},
        }
    )  # fmt: skip
    raw = tmp_path / "yellow_tripdata_2023-01.parquet"
    pq.write_table(source, raw)
    dest = tmp_path / "out.parquet"
    manifest = convert(raw, dest, YELLOW, "2023-01")
    table = pq.read_table(dest)
    assert table.schema == YELLOW.schema
    assert table["passenger_count"].to_pylist() == [1, None, 2, 1]
    assert table["airport_fee"].to_pylist() == [1.0] * n
    assert manifest.rows_in == manifest.rows_out == n
    assert manifest.columns_filled_null == ("cbd_congestion_fee", *COORDINATE_ERA_COLUMNS)


def test_a_pandas_index_in_a_parquet_source_is_dropped(tmp_path):
    # What pandas' to_parquet writes for a frame whose index is not the default range (e.g. after a filter).
    trips = pa.table(
        {
            "dispatching_base_num": ["B1", "B2"],
            "pickup_datetime": pa.array([dt.datetime(2023, 1, 1), dt.datetime(2023, 1, 2)], pa.timestamp("us")),
            "dropOff_datetime": pa.array([dt.datetime(2023, 1, 1, 1), dt.datetime(2023, 1, 2, 1)], pa.timestamp("us")),
            "PUlocationID": [1.0, None],
            "DOlocationID": [2.0, 3.0],
            "__index_level_0__": pa.array([7, 9], pa.int64()),
        }
    )
    raw = tmp_path / "fhv_tripdata_2023-01.parquet"
    pq.write_table(trips, raw)
    manifest = convert(raw, tmp_path / "out.parquet", FHV, "2023-01")
    table = pq.read_table(tmp_path / "out.parquet")
    assert table.schema == FHV.schema
    assert table["dispatching_base_num"].to_pylist() == ["B1", "B2"]
    assert table["PULocationID"].to_pylist() == [1, None]
    assert manifest.rows_in == manifest.rows_out == 2


def test_parquet_with_a_fractional_code_names_the_column(tmp_path):
    raw = tmp_path / "fhv_tripdata_2023-01.parquet"
    pq.write_table(
        pa.table(
            {
                "dispatching_base_num": ["B1"],
                "pickup_datetime": pa.array([dt.datetime(2023, 1, 1)], pa.timestamp("us")),
                "dropOff_datetime": pa.array([dt.datetime(2023, 1, 1)], pa.timestamp("us")),
                "PUlocationID": [1.5],
                "DOlocationID": [2.0],
            }
        ),
        raw,
    )
    with pytest.raises(DataError, match=r"fhv 2023-01 \(.*fhv_tripdata_2023-01.parquet\): column 'PUlocationID' "):
        convert(raw, tmp_path / "out.parquet", FHV, "2023-01")
    assert files_under(tmp_path) == ["fhv_tripdata_2023-01.parquet"]


def test_manifest_is_in_the_parquet_footer(tmp_path):
    dest = tmp_path / "out.parquet"
    written = convert(YELLOW_HEAD, dest)
    assert read_manifest(dest) == written
    assert written.source_url == "http://src/" + YELLOW_HEAD.name


# Bad input: each error names the file and the month, and nothing is left behind.


def assert_fails_cleanly(tmp_path: Path, raw: Path, pattern: str, dataset=YELLOW, at="2020-07") -> None:
    before = files_under(tmp_path)
    with pytest.raises(DataError, match=pattern) as error:
        convert(raw, tmp_path / "lake" / "out.parquet", dataset, at)
    assert f"{dataset.name} {at} ({raw})" in str(error.value)
    assert files_under(tmp_path) == before


def test_ragged_row_names_its_line(tmp_path):
    lines = YELLOW_HEAD.read_text().splitlines(keepends=True)
    lines[9] = "1,2020-07-01 00:25:32,2020-07-01 00:33:39,1,1.50\n"
    raw = tmp_path / "yellow_tripdata_2020-07.csv"
    raw.write_text("".join(lines))
    assert_fails_cleanly(tmp_path, raw, r": line 10 has 5 fields, the header has 18$")


def test_cut_last_line_names_its_line(tmp_path):
    raw = tmp_path / "yellow_tripdata_2020-07.csv.gz"
    raw.write_bytes(gzip.compress(YELLOW_HEAD.read_bytes()[:-40]))
    assert_fails_cleanly(tmp_path, raw, r": line 267 has \d+ fields, the header has 18; the file ends mid-row")


def test_empty_file(tmp_path):
    raw = tmp_path / "yellow_tripdata_2020-07.csv"
    raw.write_bytes(b"")
    assert_fails_cleanly(tmp_path, raw, r": the file is empty$")


def test_header_only_file(tmp_path):
    raw = tmp_path / "yellow_tripdata_2020-07.csv"
    raw.write_text(YELLOW_HEAD.read_text().splitlines()[0] + "\r\n")
    assert_fails_cleanly(tmp_path, raw, r": the file has a header but no rows$")


def test_unknown_column_names_column_file_and_month(tmp_path):
    lines = YELLOW_HEAD.read_text().splitlines()
    raw = tmp_path / "yellow_tripdata_2020-07.csv"
    raw.write_text("\n".join(f"{line},0" if i else f"{line},surge_fee" for i, line in enumerate(lines)))
    assert_fails_cleanly(tmp_path, raw, r": unknown column 'surge_fee'; the yellow catalogue knows VendorID, ")


def test_bad_value_names_the_line_and_column(tmp_path):
    lines = YELLOW_HEAD.read_text().splitlines()
    lines[3] = lines[3].replace("2020-07-01", "2020-07-xx", 1)
    raw = tmp_path / "yellow_tripdata_2020-07.csv"
    raw.write_text("\n".join(lines))
    assert_fails_cleanly(tmp_path, raw, r": line 4: column tpep_pickup_datetime: '2020-07-xx 00:15:11' is not a date")


def test_real_truncated_gzip(tmp_path):
    raw = tmp_path / "green_tripdata_2019-10.csv.gz"
    raw.write_bytes((DATA / "broken" / "green_tripdata_2019-10.csv.gz.truncated").read_bytes())
    assert_fails_cleanly(tmp_path, raw, r": the gzip data ends before its end-of-stream marker", GREEN, "2019-10")


def test_converting_a_month_and_encoding_it_for_postgresql_do_not_import_pandas(tmp_path):
    # In a fresh interpreter, as in a luigi worker: pandas (installed with the test extras) would cost a third of
    # a second and 40 MB per process.
    script = (
        "import sys, datetime as dt; from pathlib import Path; from luigi_tasks.catalog import YELLOW;"
        " from luigi_tasks.convert import to_canonical_parquet; from luigi_tasks.postgres import _binary_copy_chunks;"
        " m = to_canonical_parquet(Path(sys.argv[1]), Path(sys.argv[2]), dataset=YELLOW, month=dt.date(2020, 7, 1),"
        " source_url='x'); counter = [0];"
        " sum(map(len, _binary_copy_chunks(Path(sys.argv[2]), dt.date(2020, 7, 1), None, counter)));"
        " print(m.rows_out, m.rows_outside_month, counter[0], 'pandas' in sys.modules)"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(YELLOW_HEAD), str(tmp_path / "out.parquet")],
        capture_output=True,
        text=True,
        check=True,
    )
    rows = str(source_rows(YELLOW_HEAD))
    assert done.stdout.split() == [rows, "5", rows, "False"]
