"""The catalogue: every real header of 2019-2020 maps onto the canonical schema; other layouts fail clearly."""

from __future__ import annotations

import csv
import datetime as dt

import pyarrow as pa
import pytest

from luigi_tasks.catalog import FHV, FHVHV, GREEN, SERVICES, YELLOW, ZONES, check_month, parse_month, plan_columns
from luigi_tasks.errors import DataError
from tests.conftest import DATA

HEADERS = sorted((DATA / "headers").glob("*.csv"))


def header_of(path) -> list[str]:
    with open(path, newline="", encoding="utf-8") as text:
        return next(csv.reader(text))


@pytest.mark.parametrize("path", HEADERS, ids=lambda p: p.stem)
def test_every_real_header_maps_every_column(path):
    service = path.name.split("_")[0]
    plan = plan_columns(SERVICES[service], header_of(path), where=path.name)
    assert [source for source, _ in plan.read] == header_of(path)
    assert plan.dropped == ()


def test_header_files_cover_all_four_services_and_70_months():
    assert len(HEADERS) == 70
    assert {p.name.split("_")[0] for p in HEADERS} == set(SERVICES)


def test_course_fhv_spellings_are_aliases():
    header = (
        "dispatching_base_num,pickup_datetime,dropOff_datetime,PUlocationID,DOlocationID,SR_Flag,Affiliated_base_number"
    )
    plan = plan_columns(FHV, header.split(","), where="fhv 2019-01")
    assert [c.name for _, c in plan.read] == [
        "dispatching_base_num",
        "pickup_datetime",
        "dropoff_datetime",
        "PULocationID",
        "DOLocationID",
        "SR_Flag",
        "Affiliated_base_number",
    ]


def test_parquet_era_yellow_with_capitalised_airport_fee():
    header = [c.name for c in YELLOW.columns if c.name != "airport_fee"] + ["Airport_fee"]
    plan = plan_columns(YELLOW, header, where="yellow 2023-01")
    assert ("Airport_fee", YELLOW.column_for("airport_fee")) in plan.read
    assert plan.missing == ()


def test_lower_cased_zone_header_and_pandas_index_column():
    plan = plan_columns(ZONES, ["Unnamed: 0", "locationid", "borough", "zone", "service_zone"], where="zones")
    assert plan.dropped == ("Unnamed: 0",)
    assert [c.name for _, c in plan.read] == ["LocationID", "Borough", "Zone", "service_zone"]
    assert plan_columns(ZONES, ["", "LocationID", "Borough", "Zone", "service_zone"], where="zones").dropped == ("",)


def test_missing_era_columns_become_null_columns():
    plan = plan_columns(GREEN, header_of(DATA / "headers" / "green_tripdata_2019-01.csv"), where="green 2019-01")
    assert [c.name for c in plan.missing] == ["cbd_congestion_fee"]


def test_fhvhv_course_backup_without_licence_number():
    plan = plan_columns(FHVHV, header_of(DATA / "fhvhv_tripdata_2021-06_nyc-tlc-data-backup_head100.csv"), where="x")
    assert "hvfhs_license_num" in [c.name for c in plan.missing]


def test_pre_2017_yellow_layout_derives_zone_ids_from_its_coordinates():
    # The 2015-2016 yellow CSV header, with coordinates instead of zone ids.
    header = header_of(DATA / "headers" / "yellow_tripdata_2019-01.csv")[:5] + [
        "pickup_longitude", "pickup_latitude", "RatecodeID", "store_and_fwd_flag", "dropoff_longitude",
        "dropoff_latitude", "payment_type", "fare_amount", "extra", "mta_tax", "tip_amount", "tolls_amount",
        "improvement_surcharge", "total_amount",
    ]  # fmt: skip
    plan = plan_columns(YELLOW, header, where="yellow 2016-01 (http://host/yellow_tripdata_2016-01.csv.gz)")
    assert [c.name for c in plan.derived] == ["PULocationID", "DOLocationID"]
    assert "pickup_longitude" in [column.name for _, column in plan.read]


def test_unknown_columns_can_be_dropped_by_config():
    header = header_of(DATA / "headers" / "yellow_tripdata_2020-01.csv") + ["surge_fee"]
    plan = plan_columns(YELLOW, header, where="x", new_columns="drop")
    assert plan.dropped == ("surge_fee",)


def test_missing_required_column_is_an_error():
    header = [h for h in header_of(DATA / "headers" / "yellow_tripdata_2020-01.csv") if h != "tpep_pickup_datetime"]
    with pytest.raises(DataError, match=r"yellow 2020-01: missing required column tpep_pickup_datetime"):
        plan_columns(YELLOW, header, where="yellow 2020-01")


def test_two_spellings_of_one_column_is_an_error():
    with pytest.raises(DataError, match="'PULocationID' and 'PUlocationID' both mean 'PULocationID'"):
        plan_columns(FHV, ["pickup_datetime", "PULocationID", "PUlocationID"], where="fhv")


def test_canonical_types_follow_the_rules():
    for dataset in SERVICES.values():
        for column in dataset.columns:
            assert column.type in (pa.int64(), pa.float64(), pa.timestamp("us"), pa.string()), column
    assert YELLOW.schema.field("passenger_count").type == pa.int64()
    assert GREEN.schema.field("ehail_fee").type == pa.float64()
    assert FHV.schema.field("SR_Flag").type == pa.string()


def test_months():
    assert parse_month("2021-01") == dt.date(2021, 1, 1)
    for bad in ("2021-13", "2021-1", "21-01", "january", "2021-00"):
        with pytest.raises(DataError, match=f"invalid month '{bad}': expected YYYY-MM"):
            parse_month(bad)
    with pytest.raises(DataError, match="fhvhv 2019-01: the TLC publishes fhvhv from 2019-02 on"):
        check_month(FHVHV, dt.date(2019, 1, 1))
    check_month(FHVHV, dt.date(2019, 2, 1))
