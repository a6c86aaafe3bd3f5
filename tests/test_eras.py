"""Every era of the TLC's Parquet files, shaped as their footers are (names, letter case, types: ERAS.md), converts
into its service's one canonical schema with the values it holds."""

from __future__ import annotations

import datetime as dt
import decimal
import subprocess
import sys

import duckdb
import psycopg2
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from luigi_tasks import IngestMonth
from luigi_tasks.catalog import FHV, FHVHV, GREEN, YELLOW, Dataset
from luigi_tasks.convert import to_canonical_parquet
from luigi_tasks.zone_shapes import zone_shapes
from tests.conftest import (
    PARQUET_PATH,
    luigi_command,
    luigi_settings,
    month,
    month_path,
    pipeline_settings,
    run_tasks,
    serve_zones,
    write_config,
)
from tests.test_cloud import cloud  # noqa: F401 - the fixture
from tests.test_cloud import query as bq_query
from tests.test_summary import INGEST_MONTH, summary_of

# Places whose zones the TLC's shapes give (ERAS.md): (longitude, latitude) -> LocationID.
TIMES_SQUARE, JFK, LAGUARDIA = (-73.9855, 40.7580), (-73.7781, 40.6413), (-73.8740, 40.7769)
CENTRAL_PARK = (-73.9654, 40.7829)
NEWARK_AIRPORT_TERMINAL = (-74.1745, 40.6895)  # zone 1, EWR, in New Jersey but a TLC zone
PHILADELPHIA = (-75.1652, 39.9526)  # in no zone
S, D, I64, I32, TEXT, LTEXT = pa.string(), pa.float64(), pa.int64(), pa.int32(), pa.string(), pa.large_string()
US = pa.timestamp("us")


def test_known_points_land_in_their_zones():
    points = [TIMES_SQUARE, JFK, LAGUARDIA, CENTRAL_PARK, NEWARK_AIRPORT_TERMINAL, PHILADELPHIA, (0.0, 0.0)]
    ids, known = zone_shapes().zone_ids(*(pa.array([p[i] for p in points]).to_numpy() for i in (0, 1)))
    assert ids.tolist() == [230, 132, 138, 43, 1, 0, 0]
    assert known.tolist() == [True] * 6 + [False]


def _convert(tmp_path, dataset: Dataset, at: str, columns: dict[str, tuple[pa.DataType, list]]):
    table = pa.table({name: pa.array(values, type_) for name, (type_, values) in columns.items()})
    raw = tmp_path / f"{dataset.name}_tripdata_{at}.parquet"
    pq.write_table(table, raw)
    assert pq.read_schema(raw).types == [type_ for type_, _ in columns.values()]  # as the footer has it
    dest = tmp_path / "out.parquet"
    manifest = to_canonical_parquet(raw, dest, dataset=dataset, month=month(at), source_url="x")
    converted = pq.read_table(dest)
    assert converted.schema == dataset.schema
    return converted.to_pylist(), manifest


def _points(*points) -> tuple[list[float], list[float]]:
    return [p[0] for p in points], [p[1] for p in points]


def test_yellow_2009(tmp_path):
    start_lon, start_lat = _points(TIMES_SQUARE, LAGUARDIA, (0.0, 0.0))
    end_lon, end_lat = _points(JFK, CENTRAL_PARK, PHILADELPHIA)
    rows, manifest = _convert(tmp_path, YELLOW, "2009-01", {
        "vendor_name": (S, ["VTS", "CMT", "DDS"]),
        "Trip_Pickup_DateTime": (S, ["2009-01-04 02:52:00", "2009-01-04 03:31:00", "2009-01-03 15:43:00"]),
        "Trip_Dropoff_DateTime": (S, ["2009-01-04 03:02:00", "2009-01-04 03:38:00", "2009-01-03 15:57:00"]),
        "Passenger_Count": (I64, [1, 3, 5]),
        "Trip_Distance": (D, [2.63, 4.55, 10.35]),
        "Start_Lon": (D, start_lon),
        "Start_Lat": (D, start_lat),
        "Rate_Code": (D, [None, None, 1.0]),
        "store_and_forward": (D, [None, 1.0, 0.0]),
        "End_Lon": (D, end_lon),
        "End_Lat": (D, end_lat),
        "Payment_Type": (S, ["CASH", "Credit", "No Charge"]),
        "Fare_Amt": (D, [8.9, 12.1, 23.7]),
        "surcharge": (D, [0.5, 0.5, 0.0]),
        "mta_tax": (D, [None, None, None]),
        "Tip_Amt": (D, [0.0, 2.0, 4.74]),
        "Tolls_Amt": (D, [0.0, 0.0, 0.0]),
        "Total_Amt": (D, [9.4, 14.6, 28.44]),
    })  # fmt: skip
    assert [row["VendorID"] for row in rows] == [2, 1, None]  # DDS has no code: its name is kept
    assert [row["vendor_name"] for row in rows] == ["VTS", "CMT", "DDS"]
    assert rows[0]["tpep_pickup_datetime"] == dt.datetime(2009, 1, 4, 2, 52)  # New York wall clock, as written
    assert [row["PULocationID"] for row in rows] == [230, 138, None]
    assert [row["DOLocationID"] for row in rows] == [132, 43, None]
    assert [row["payment_type"] for row in rows] == [2, 1, 3]
    assert [row["store_and_fwd_flag"] for row in rows] == [None, "Y", "N"]
    assert [row["RatecodeID"] for row in rows] == [None, None, 1]
    assert [row["extra"] for row in rows] == [0.5, 0.5, 0.0]
    assert [row["fare_amount"] for row in rows] == [8.9, 12.1, 23.7]
    assert rows[2]["pickup_longitude"] == 0.0  # 0 means unknown, kept as written
    assert [row["improvement_surcharge"] for row in rows] == [None] * 3
    assert manifest.values_without_code == {"VendorID": {"DDS": 1}}
    assert manifest.zones_not_found == {
        "DOLocationID": {"in no zone": 1, "no coordinates": 0},
        "PULocationID": {"in no zone": 0, "no coordinates": 1},
    }
    assert manifest.rows_out == 3


@pytest.mark.parametrize("with_pandas_index", [False, True], ids=["2010-01", "2010-02"])
def test_yellow_2010(tmp_path, with_pandas_index):
    lon, lat = _points(CENTRAL_PARK, JFK)
    end_lon, end_lat = _points(TIMES_SQUARE, TIMES_SQUARE)
    columns = {
        "vendor_id": (S, ["CMT", "VTS"]),
        "pickup_datetime": (S, ["2010-01-26 07:41:00", "2010-01-30 23:31:00"]),
        "dropoff_datetime": (S, ["2010-01-26 07:45:00", "2010-01-30 23:46:12"]),
        "passenger_count": (I64, [1, 1]),
        "trip_distance": (D, [0.75, 5.9]),
        "pickup_longitude": (D, lon),
        "pickup_latitude": (D, lat),
        "rate_code": (D, [1.0, 2.0]),
        "store_and_fwd_flag": (S, [None, "N"]),
        "dropoff_longitude": (D, end_lon),
        "dropoff_latitude": (D, end_lat),
        "payment_type": (S, ["CAS", "CRE"]),
        "fare_amount": (D, [4.5, 45.0]),
        "surcharge": (D, [0.0, 0.5]),
        "mta_tax": (D, [0.5, 0.5]),
        "tip_amount": (D, [0.0, 9.0]),
        "tolls_amount": (D, [0.0, 4.57]),
        "total_amount": (D, [5.0, 59.57]),
    }
    if with_pandas_index:
        columns["__index_level_0__"] = (I64, [7, 8])
    rows, manifest = _convert(tmp_path, YELLOW, "2010-01", columns)
    assert [(row["VendorID"], row["vendor_name"]) for row in rows] == [(1, "CMT"), (2, "VTS")]
    assert [(row["PULocationID"], row["DOLocationID"]) for row in rows] == [(43, 230), (132, 230)]
    assert [row["payment_type"] for row in rows] == [2, 1]
    assert [row["RatecodeID"] for row in rows] == [1, 2]
    assert rows[1]["tpep_dropoff_datetime"] == dt.datetime(2010, 1, 30, 23, 46, 12)
    assert manifest.columns_dropped == (("__index_level_0__",) if with_pandas_index else ())
    assert manifest.values_without_code == {}


def _yellow_2011_on(ids: pa.DataType, text: pa.DataType, codes: pa.DataType, airport: str, airport_type, cbd: bool):
    columns = {
        "VendorID": (ids, [1, 2]),
        "tpep_pickup_datetime": (US, [dt.datetime(2015, 1, 1, 0, 11), dt.datetime(2015, 1, 1, 0, 18)]),
        "tpep_dropoff_datetime": (US, [dt.datetime(2015, 1, 1, 0, 16), dt.datetime(2015, 1, 1, 0, 31)]),
        "passenger_count": (codes, [1, None]),
        "trip_distance": (D, [1.0, 3.3]),
        "RatecodeID": (codes, [1, 99]),
        "store_and_fwd_flag": (text, ["N", None]),
        "PULocationID": (ids, [230, 132]),
        "DOLocationID": (ids, [43, 264]),
        "payment_type": (I64, [1, 2]),
        "fare_amount": (D, [5.7, 14.5]),
        "extra": (D, [0.5, 0.5]),
        "mta_tax": (D, [0.5, 0.5]),
        "tip_amount": (D, [1.4, 0.0]),
        "tolls_amount": (D, [0.0, 0.0]),
        "improvement_surcharge": (D, [0.3, 0.3]),
        "total_amount": (D, [8.4, 15.8]),
        "congestion_surcharge": (D, [None, 2.5]),
        airport: (airport_type, [None, None] if airport_type == pa.null() else [0.0, 1.75]),
    }
    if cbd:
        columns["cbd_congestion_fee"] = (D, [0.75, 0.0])
    return columns


@pytest.mark.parametrize(
    "at, shape",
    [
        ("2011-01", (I64, S, D, "airport_fee", pa.null(), False)),  # codes double, airport_fee null-typed
        ("2023-02", (I32, LTEXT, I64, "Airport_fee", D, False)),  # int32 ids, large_string
        ("2025-01", (I32, LTEXT, I64, "Airport_fee", D, True)),  # adds cbd_congestion_fee
    ],
)
def test_yellow_2011_on(tmp_path, at, shape):
    rows, _ = _convert(tmp_path, YELLOW, at, _yellow_2011_on(*shape))
    assert [(row["VendorID"], row["PULocationID"], row["DOLocationID"]) for row in rows] == [
        (1, 230, 43),
        (2, 132, 264),
    ]
    assert [row["passenger_count"] for row in rows] == [1, None]
    assert [row["RatecodeID"] for row in rows] == [1, 99]
    assert [row["airport_fee"] for row in rows] == ([None, None] if shape[4] == pa.null() else [0.0, 1.75])
    assert [row["cbd_congestion_fee"] for row in rows] == ([0.75, 0.0] if shape[5] else [None, None])
    assert [row["pickup_longitude"] for row in rows] == [None, None]


@pytest.mark.parametrize("era", ["2014-01", "2019-09", "2023-02"])
def test_green(tmp_path, era):
    ids, text, codes = (I32, LTEXT, I64) if era == "2023-02" else (I64, S, D)
    ehail = {"2014-01": D, "2019-09": pa.null(), "2023-02": D}[era]
    rows, _ = _convert(tmp_path, GREEN, era, {
        "VendorID": (ids, [2]),
        "lpep_pickup_datetime": (US, [dt.datetime(2014, 1, 1, 0, 15)]),
        "lpep_dropoff_datetime": (US, [dt.datetime(2014, 1, 1, 0, 30)]),
        "store_and_fwd_flag": (text, ["N"]),
        "RatecodeID": (codes, [1]),
        "PULocationID": (ids, [74]),
        "DOLocationID": (ids, [168]),
        "passenger_count": (codes, [1]),
        "trip_distance": (D, [2.1]),
        "fare_amount": (D, [9.5]),
        "extra": (D, [0.5]),
        "mta_tax": (D, [0.5]),
        "tip_amount": (D, [0.0]),
        "tolls_amount": (D, [0.0]),
        "ehail_fee": (ehail, [None]),
        "improvement_surcharge": (D, [0.0]),
        "total_amount": (D, [10.5]),
        "payment_type": (codes, [2]),
        "trip_type": (codes, [1]),
        "congestion_surcharge": (D, [None]),
    })  # fmt: skip
    assert rows[0]["PULocationID"] == 74 and rows[0]["payment_type"] == 2 and rows[0]["trip_type"] == 1
    assert rows[0]["ehail_fee"] is None and rows[0]["store_and_fwd_flag"] == "N"


@pytest.mark.parametrize(
    "at, ids, sr_flag, text",
    [("2019-02", D, D, S), ("2019-03", D, pa.null(), S), ("2023-02", I64, I64, LTEXT)],
)
def test_fhv(tmp_path, at, ids, sr_flag, text):
    rows, _ = _convert(tmp_path, FHV, at, {
        "dispatching_base_num": (text, ["B00013", "B00014"]),
        "pickup_datetime": (US, [dt.datetime(2019, 2, 1, 0, 1), dt.datetime(2019, 2, 1, 0, 2)]),
        "dropOff_datetime": (US, [dt.datetime(3019, 2, 1, 0, 21), dt.datetime(2019, 2, 1, 0, 30)]),
        "PUlocationID": (ids, [None, 161]),
        "DOlocationID": (ids, [264, None]),
        "SR_Flag": (sr_flag, [None, None] if sr_flag == pa.null() else [1, None]),
        "Affiliated_base_number": (text, ["B00013", None]),
    })  # fmt: skip
    assert [(row["PULocationID"], row["DOLocationID"]) for row in rows] == [(None, 264), (161, None)]
    assert rows[0]["dropoff_datetime"] == dt.datetime(3019, 2, 1, 0, 21)  # the real year-3019 drop-off
    assert rows[0]["SR_Flag"] == (None if sr_flag == pa.null() else "1")


@pytest.mark.parametrize("at, ids, text, wav", [("2019-02", I64, S, pa.null()), ("2023-02", I32, LTEXT, LTEXT)])
def test_fhvhv(tmp_path, at, ids, text, wav):
    t = dt.datetime(2019, 2, 1, 0, 5)
    rows, _ = _convert(tmp_path, FHVHV, at, {
        "hvfhs_license_num": (text, ["HV0003"]),
        "dispatching_base_num": (text, ["B02867"]),
        "originating_base_num": (text, ["B02867"]),
        "request_datetime": (US, [t]),
        "on_scene_datetime": (US, [t]),
        "pickup_datetime": (US, [t]),
        "dropoff_datetime": (US, [t]),
        "PULocationID": (ids, [245]),
        "DOLocationID": (ids, [251]),
        "trip_miles": (D, [2.45]),
        "trip_time": (I64, [579]),
        "base_passenger_fare": (D, [9.35]),
        "tolls": (D, [0.0]),
        "bcf": (D, [0.23]),
        "sales_tax": (D, [0.83]),
        "congestion_surcharge": (D, [0.0]),
        "airport_fee": (pa.null(), [None]),
        "tips": (D, [0.0]),
        "driver_pay": (D, [7.48]),
        "shared_request_flag": (text, ["N"]),
        "shared_match_flag": (text, ["N"]),
        "access_a_ride_flag": (text, ["N"]),
        "wav_request_flag": (text, ["N"]),
        "wav_match_flag": (wav, [None] if wav == pa.null() else ["N"]),
    })  # fmt: skip
    assert rows[0]["PULocationID"] == 245 and rows[0]["trip_time"] == 579 and rows[0]["hvfhs_license_num"] == "HV0003"
    assert rows[0]["wav_match_flag"] == (None if wav == pa.null() else "N")


def test_a_coordinate_era_conversion_does_not_import_pandas(tmp_path):
    # The zone lookup (shapely, pyproj, numpy) in a fresh interpreter, as in a luigi worker.
    raw = tmp_path / "yellow_tripdata_2009-01.parquet"
    lon, lat = _points(TIMES_SQUARE, JFK)
    times = pa.array(["2009-01-04 02:52:00", "2009-01-04 03:31:00"])
    pq.write_table(pa.table({
        "vendor_name": ["VTS", "DDS"], "Trip_Pickup_DateTime": times, "Trip_Dropoff_DateTime": times,
        "Passenger_Count": [1, 2], "Trip_Distance": [1.0, 2.0], "Rate_Code": [1.0, 1.0],
        "Start_Lon": lon, "Start_Lat": lat, "End_Lon": lon,
        "End_Lat": lat, "Payment_Type": ["CASH", "CRE"], "Fare_Amt": [5.0, 6.0], "surcharge": [0.0, 0.5],
        "mta_tax": [0.5, 0.5], "Tip_Amt": [0.0, 1.0], "Tolls_Amt": [0.0, 0.0], "Total_Amt": [5.5, 8.0],
    }), raw)  # fmt: skip
    script = (
        "import sys, datetime as dt; from pathlib import Path; from luigi_tasks.catalog import YELLOW;"
        " from luigi_tasks.convert import to_canonical_parquet;"
        " m = to_canonical_parquet(Path(sys.argv[1]), Path(sys.argv[2]), dataset=YELLOW, month=dt.date(2009, 1, 1),"
        " source_url='x'); imported = 'pandas' in sys.modules; import pyarrow.parquet as pq;"
        " print(pq.read_table(sys.argv[2]).column('PULocationID').to_pylist(), imported)"
    )
    done = subprocess.run([sys.executable, "-c", script, str(raw), str(tmp_path / "out.parquet")],
                          capture_output=True, text=True, check=True)  # fmt: skip
    assert done.stdout.split() == ["[230,", "132]", "False"]


def test_new_columns_of_a_parquet_month_are_kept_with_normalised_types(tmp_path):
    columns = _yellow_2011_on(I32, LTEXT, I64, "Airport_fee", D, True)
    columns["request_source"] = (LTEXT, ["app", None])
    columns["request_count"] = (I32, [3, None])
    columns["request_fee"] = (pa.decimal128(6, 2), [decimal.Decimal("1.10"), None])
    columns["requested_at"] = (pa.timestamp("ns", tz="UTC"), [dt.datetime(2026, 6, 1, 4, 0), None])
    columns["request_note"] = (pa.null(), [None, None])  # nulls only: nothing to keep, no type to give
    table = pa.table({name: pa.array(values, type_) for name, (type_, values) in columns.items()})
    raw = tmp_path / "yellow_tripdata_2026-06.parquet"
    pq.write_table(table, raw)
    dest = tmp_path / "out.parquet"
    manifest = to_canonical_parquet(
        raw, dest, dataset=YELLOW, month=month("2026-06"), source_url="x", new_columns="keep"
    )
    converted = pq.read_table(dest)
    assert converted.schema.names == [
        *YELLOW.schema.names,
        "request_source",
        "request_count",
        "request_fee",
        "requested_at",
    ]
    assert manifest.columns_added == {
        "request_source": "string",
        "request_count": "int64",
        "request_fee": "double",
        "requested_at": "timestamp[us]",
    }
    assert manifest.columns_dropped == ("request_note",)
    first = converted.slice(0, 1).to_pylist()[0]
    assert (first["request_source"], first["request_count"], first["request_fee"]) == ("app", 3, 1.1)
    assert first["requested_at"] == dt.datetime(2026, 6, 1, 0, 0)  # New York wall clock, as every TLC time


def _yellow_2009_file(rows: int = 300) -> tuple[bytes, dict[str, list]]:
    """A seeded yellow 2009 month as the TLC's footer has it, its points around the four known places."""
    import numpy as np

    rng = np.random.default_rng(9)
    places = np.array([TIMES_SQUARE, JFK, LAGUARDIA, CENTRAL_PARK, (0.0, 0.0)])
    start, end = places[rng.integers(0, 5, rows)], places[rng.integers(0, 4, rows)]
    jitter = lambda: rng.normal(0, 0.0003, rows)  # noqa: E731 - about 30 m, well inside each place's zone
    pickup = [f"2009-01-{1 + i % 28:02d} {i % 24:02d}:{i % 60:02d}:00" for i in range(rows)]
    columns = {
        "vendor_name": pa.array(rng.choice(["VTS", "CMT", "DDS"], rows).tolist()),
        "Trip_Pickup_DateTime": pa.array(pickup),
        "Trip_Dropoff_DateTime": pa.array(pickup),
        "Passenger_Count": pa.array(rng.integers(1, 6, rows).tolist()),
        "Trip_Distance": pa.array(rng.gamma(2.0, 1.5, rows).tolist()),
        "Start_Lon": pa.array(np.where(start[:, 0] == 0, 0, start[:, 0] + jitter()).tolist()),
        "Start_Lat": pa.array(np.where(start[:, 1] == 0, 0, start[:, 1] + jitter()).tolist()),
        "Rate_Code": pa.nulls(rows, pa.float64()),
        "store_and_forward": pa.nulls(rows, pa.float64()),
        "End_Lon": pa.array((end[:, 0] + jitter()).tolist()),
        "End_Lat": pa.array((end[:, 1] + jitter()).tolist()),
        "Payment_Type": pa.array(rng.choice(["CASH", "Credit", "CASH", "No Charge"], rows).tolist()),
        "Fare_Amt": pa.array(rng.gamma(2.0, 5.0, rows).round(2).tolist()),
        "surcharge": pa.array([0.5] * rows),
        "mta_tax": pa.nulls(rows, pa.float64()),
        "Tip_Amt": pa.array([0.0] * rows),
        "Tolls_Amt": pa.array([0.0] * rows),
        "Total_Amt": pa.array(rng.gamma(2.0, 6.0, rows).round(2).tolist()),
    }
    sink = pa.BufferOutputStream()
    pq.write_table(pa.table(columns), sink)
    zone_of = {TIMES_SQUARE: 230, JFK: 132, LAGUARDIA: 138, CENTRAL_PARK: 43}
    return sink.getvalue().to_pybytes(), {"PULocationID": [zone_of.get(tuple(p)) for p in start]}


def test_a_2009_month_through_lake_postgresql_and_duckdb_with_its_zone_ids(tmp_path, server, pg_dsn):
    body, expected = _yellow_2009_file()
    server.add(month_path(PARQUET_PATH, "yellow", "2009-01"), body)
    serve_zones(server)
    settings = {**pipeline_settings(server, tmp_path / "lake", source="auto"), ("postgres", "dsn"): pg_dsn}
    settings[("duckdb", "path")] = str(tmp_path / "taxi_rides_ny.duckdb")
    config_file = write_config(tmp_path / "luigi.cfg", settings)
    done = luigi_command(["yellow", "2009-01", "--sinks", "lake,postgres,duckdb"], config_file, program=INGEST_MONTH)
    assert done.returncode == 0, done.stderr
    lines = summary_of(done.stderr)
    assert lines[1].split()[:3] == ["yellow", "2009-01", "done"]
    without_zone = sum(zone is None for zone in expected["PULocationID"])
    assert f"    note: PULocationID from coordinates: NULL for {without_zone} no coordinates" in lines
    assert any(line.startswith("    note: VendorID: values without a code, kept as NULL: 'DDS' ") for line in lines)

    with psycopg2.connect(pg_dsn) as conn, conn.cursor() as cur:
        cur.execute(
            'SELECT "PULocationID", vendor_name, "VendorID" FROM yellow_tripdata'
            " WHERE source_month = '2009-01-01' ORDER BY tpep_pickup_datetime, pickup_longitude"
        )
        in_postgres = cur.fetchall()
    conn.close()
    lake_file = tmp_path / "lake" / "yellow" / "2009" / "yellow_tripdata_2009-01.parquet"
    in_lake = pq.read_table(lake_file).sort_by(
        [("tpep_pickup_datetime", "ascending"), ("pickup_longitude", "ascending")]
    )
    assert [row[0] for row in in_postgres] == in_lake.column("PULocationID").to_pylist()
    assert sorted(in_lake.column("PULocationID").to_pylist(), key=str) == sorted(expected["PULocationID"], key=str)
    assert {(row[1], row[2]) for row in in_postgres} == {("VTS", 2), ("CMT", 1), ("DDS", None)}
    conn = duckdb.connect(str(tmp_path / "taxi_rides_ny.duckdb"), read_only=True)
    joined = conn.execute(
        "SELECT count(*) FROM prod.yellow_tripdata t JOIN prod.zones z ON t.PULocationID = z.LocationID"
        " WHERE t.source_month = DATE '2009-01-01'"
    ).fetchone()[0]
    conn.close()
    assert joined == sum(zone is not None for zone in expected["PULocationID"]) > 0


def test_a_2009_month_through_gcs_and_bigquery_with_its_zone_ids(
    cloud,  # noqa: F811 - the fixture
    server,
    bigquery_client,
    bigquery_dataset,
):
    body, expected = _yellow_2009_file()
    server.add(month_path(PARQUET_PATH, "yellow", "2009-01"), body)
    serve_zones(server)
    with luigi_settings({("tlc", "source"): "auto"}):
        result, failures = run_tasks(IngestMonth(service="yellow", month=month("2009-01"), sinks="lake,gcs,bigquery"))
    assert failures == {}, result.summary_text
    in_bigquery = bq_query(
        bigquery_client,
        f"SELECT PULocationID, COUNT(*) FROM `{bigquery_dataset}.yellow_tripdata`"
        " WHERE source_month = DATE '2009-01-01' GROUP BY 1",
    )
    counted = {zone: expected["PULocationID"].count(zone) for zone in set(expected["PULocationID"])}
    assert dict(in_bigquery) == counted
    vendors = bq_query(
        bigquery_client, f"SELECT DISTINCT vendor_name, VendorID FROM `{bigquery_dataset}.yellow_tripdata`"
    )
    assert set(vendors) == {("VTS", 2), ("CMT", 1), ("DDS", None)}
