"""The DuckDB sink against real DuckDB files: exact counts on rerun and reload, the catalogue's types, several
workers into one file, a file another process holds, a remote lake, and the same answers as PostgreSQL."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import duckdb
import luigi
import psycopg2
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from luigi_tasks import IngestMonth, LoadToDuckDB, ToParquet, config
from luigi_tasks.catalog import GREEN, YELLOW, ZONES
from luigi_tasks.duckdb import _DUCKDB_TYPES, Warehouse, connection, load, loaded_months
from luigi_tasks.errors import DataError, PipelineError
from luigi_tasks.lake import canonical_key
from luigi_tasks.sql import column_problems
from luigi_tasks.synthetic import write_trip_csv
from luigi_tasks.tasks.backfill import Backfill
from luigi_tasks.tasks.duckdb import configured_warehouse
from tests.conftest import (
    DATA,
    logged,
    luigi_command,
    luigi_settings,
    month,
    pipeline_settings,
    run_tasks,
    serve_csv_month,
    serve_zones,
    write_config,
)
from tests.test_postgres import canonical
from tests.test_remote_lake import remote_lake  # noqa: F401 - the fixture
from tests.test_summary import BACKFILL, row, summary_of

YELLOW_HEAD = (DATA / "yellow_tripdata_2020-07_head266.csv").read_bytes()
GREEN_HEAD = (DATA / "green_tripdata_2019-01_head99.csv").read_bytes()
JULY = month("2020-07")
PYTHON = Path(sys.executable).resolve()  # how DuckDB names the program that holds a file
# The course's question: trips per pickup borough in a month, trips joined with the zone lookup.
BOROUGHS = (
    'SELECT z."Borough", count(*) FROM {trips} t JOIN {zones} z ON t."PULocationID" = z."LocationID"'
    " WHERE t.source_month = DATE '2020-07-01' GROUP BY 1 ORDER BY 1"
)
# The course's join (week 1), with an ORDER BY added so that two databases can be compared row by row.
COURSE_JOIN = (
    "SELECT tpep_pickup_datetime, tpep_dropoff_datetime, total_amount,"
    """ CONCAT(zpu."Borough", ' / ', zpu."Zone") AS "pickup_loc","""
    """ CONCAT(zdo."Borough", ' / ', zdo."Zone") AS "dropoff_loc" """
    'FROM {trips} t JOIN {zones} zpu ON t."PULocationID" = zpu."LocationID"'
    ' JOIN {zones} zdo ON t."DOLocationID" = zdo."LocationID"'
    " ORDER BY 1, 2, 3, 4, 5"
)


# What the course's dbt project (04-analytics-engineering/taxi_rides_ny, its DuckDB profile) writes into the file:
# its seed taxi_zone_lookup as dbt-duckdb types it, in the target's schema, and models of the same shape as its
# own, the staging views reading our tables through its source `raw` (database taxi_rides_ny, schema prod).
COURSE_NAME_RULE = (
    "the course's dbt project reads its sources from database taxi_rides_ny, the name DuckDB gives a file"
    ' taxi_rides_ny.duckdb; this file is database {database}, so they do not resolve (Catalog "taxi_rides_ny" does'
    " not exist): name it taxi_rides_ny.duckdb ([duckdb] path) to use them"
)
COURSE_SEED = (
    "CREATE TABLE IF NOT EXISTS {t}.taxi_zone_lookup"
    " (locationid INTEGER, borough VARCHAR, zone VARCHAR, service_zone VARCHAR);"
    " DELETE FROM {t}.taxi_zone_lookup;"
    " INSERT INTO {t}.taxi_zone_lookup SELECT * FROM read_csv('{zones}', header = true);"
    " CREATE OR REPLACE TABLE {t}.payment_type_lookup AS SELECT * FROM (VALUES (1, 'Credit card'), (2, 'Cash'))"
    " p(payment_type, description);"
)
COURSE_MODELS = (
    "CREATE OR REPLACE VIEW {t}.stg_yellow_tripdata AS SELECT cast(vendorid AS integer) AS vendor_id,"
    " cast(pulocationid AS integer) AS pickup_location_id, cast(tpep_pickup_datetime AS timestamp) AS pickup_datetime,"
    " cast(total_amount AS numeric) AS total_amount FROM taxi_rides_ny.prod.yellow_tripdata WHERE vendorid IS NOT NULL;"
    " CREATE OR REPLACE VIEW {t}.stg_green_tripdata AS SELECT cast(vendorid AS integer) AS vendor_id,"
    " cast(pulocationid AS integer) AS pickup_location_id, cast(lpep_pickup_datetime AS timestamp) AS pickup_datetime,"
    " cast(total_amount AS numeric) AS total_amount FROM taxi_rides_ny.prod.green_tripdata WHERE vendorid IS NOT NULL;"
    " CREATE OR REPLACE TABLE {t}.int_trips_unioned AS SELECT 'Yellow' AS service_type, * FROM {t}.stg_yellow_tripdata"
    " UNION ALL SELECT 'Green', * FROM {t}.stg_green_tripdata;"
    " CREATE OR REPLACE TABLE {t}.dim_zones AS SELECT locationid AS location_id, borough, zone, service_zone"
    " FROM {t}.taxi_zone_lookup;"
    " CREATE OR REPLACE TABLE {t}.dim_vendors AS SELECT DISTINCT vendor_id FROM {t}.int_trips_unioned;"
    " CREATE OR REPLACE TABLE {t}.fct_trips AS SELECT t.*, z.borough AS pickup_borough FROM {t}.int_trips_unioned t"
    " JOIN {t}.dim_zones z ON t.pickup_location_id = z.location_id;"
)


def course_dbt(path: Path, target: str, *, models: bool = True, full_refresh: bool = False) -> None:
    """Do to the file what the course's `dbt seed` (models False) or `dbt build` does with `--target TARGET`;
    `--full-refresh` drops the seed first, and dbt creates it anew as it types it."""
    with duckdb.connect(str(path)) as conn:
        conn.execute(f"CREATE SCHEMA IF NOT EXISTS {target}")
        if full_refresh:
            conn.execute(f"DROP TABLE IF EXISTS {target}.taxi_zone_lookup")
        conn.execute(COURSE_SEED.format(t=target, zones=DATA / "taxi_zone_lookup.csv"))
        if models:
            conn.execute(COURSE_MODELS.format(t=target))


def columns_of(path: Path, schema: str, table: str) -> list[tuple[str, str]]:
    return query(
        path,
        "SELECT column_name, data_type FROM information_schema.columns WHERE table_schema = ? AND table_name = ?"
        " ORDER BY ordinal_position",
        [schema, table],
    )


def query(path: Path, sql: str, params: list | None = None) -> list[tuple]:
    with duckdb.connect(str(path), read_only=True) as conn:
        return conn.execute(sql, params or []).fetchall()


def manifest_rows(dataset, when) -> int:
    return config.lake().open().entry(canonical_key(dataset, when)).manifest.rows_out


def ingest(*tasks: luigi.Task, **build) -> luigi.execution_summary.LuigiRunResult:
    result, failures = run_tasks(*tasks) if not build else (luigi.build(list(tasks), **build), {})
    assert failures == {}, failures
    assert result.status == luigi.LuigiStatusCode.SUCCESS, result.summary_text
    return result


@pytest.fixture
def served(lake, server) -> Path:
    """The lake fixture with July's sample and the zone lookup served; returns the default DuckDB file."""
    serve_csv_month(server, "yellow", "2020-07", YELLOW_HEAD)
    serve_zones(server)
    return lake.parent / "taxi_rides_ny.duckdb"  # beside the lake


@pytest.fixture
def holder(tmp_path) -> Iterator:
    """Start a process that opens a DuckDB file for writing and keeps it open until the test ends."""
    children: list[subprocess.Popen] = []

    def hold(path: Path) -> subprocess.Popen:
        code = "import duckdb, sys, time; c = duckdb.connect(sys.argv[1]); print('open', flush=True); time.sleep(600)"
        child = subprocess.Popen([sys.executable, "-c", code, str(path)], stdout=subprocess.PIPE, text=True)
        children.append(child)
        assert child.stdout.readline() == "open\n"
        return child

    yield hold
    for child in children:
        child.kill()
        child.wait()


def test_load_twice_counts_once(served):
    ingest(IngestMonth(service="yellow", month=JULY, sinks="lake,duckdb"))
    rows = manifest_rows(YELLOW, JULY)
    assert rows == 266  # the sample's rows
    counts = "SELECT source_month, count(*), count(DISTINCT t) FROM prod.yellow_tripdata t GROUP BY 1"
    assert query(served, counts) == [(JULY, rows, rows)]  # the sample has no duplicate rows
    assert query(served, "SELECT count(*) FROM prod.zones") == [(manifest_rows(ZONES, None),)]

    result = ingest(IngestMonth(service="yellow", month=JULY, sinks="lake,duckdb"))
    assert "Did not run any tasks" in result.summary_text
    ingest(LoadToDuckDB(service="yellow", month=JULY, reload=True))
    assert query(served, counts) == [(JULY, rows, rows)]
    markers = query(served, "SELECT update_id, target_table, row_count FROM prod.table_updates ORDER BY 1")
    assert markers == [
        ("yellow_tripdata:2020-07", "yellow_tripdata", 266),
        ("zones", "zones", 265),
    ]


def test_columns_have_the_catalogues_types(tmp_path):
    parquet = canonical(tmp_path, YELLOW, "2021-01", 1000)
    warehouse = Warehouse(tmp_path / "w.duckdb", "prod", "table_updates")
    kept = {"dataset": YELLOW, "table": "yellow_tripdata", "month": month("2021-01"), "lake_file": "1:a"}
    assert loaded_months(warehouse, YELLOW, "yellow_tripdata", {month("2021-01"): "1:a"}) == set()
    assert not warehouse.path.exists()  # asking does not make the file
    assert load(warehouse, parquet, **kept) == 1000
    with duckdb.connect(str(warehouse.path), read_only=True) as conn:
        schema = conn.execute("SELECT * FROM prod.yellow_tripdata LIMIT 0").to_arrow_table().schema
    assert schema == YELLOW.schema.append(pa.field("source_month", pa.date32()))


def test_several_months_with_two_workers_into_one_file(lake, server, tmp_path):
    months = ["2021-01", "2021-02", "2021-03", "2021-04"]
    for i, when in enumerate(months):
        csv = write_trip_csv(tmp_path / f"{when}.csv", YELLOW, month(when), 2_000 + i, seed=i)
        serve_csv_month(server, "yellow", when, csv.read_bytes())
    serve_zones(server)
    backfill = Backfill(services=("yellow",), start=month(months[0]), stop=month(months[-1]), sinks=("lake", "duckdb"))
    ingest(backfill, local_scheduler=True, workers=2, detailed_summary=True, log_level="WARNING")
    path = lake.parent / "taxi_rides_ny.duckdb"
    counts = query(path, "SELECT strftime(source_month, '%Y-%m'), count(*) FROM prod.yellow_tripdata GROUP BY 1")
    assert dict(counts) == {when: manifest_rows(YELLOW, month(when)) for when in months}
    assert dict(counts) == {"2021-01": 2000, "2021-02": 2001, "2021-03": 2002, "2021-04": 2003}


# A load in a child process that stops halfway through its INSERT (inside the transaction) and waits to be killed:
# a month of yellow_tripdata (the month given), or the zone lookup into the table given (no month).
_KILLED_MID_INSERT = """
import sys, time, datetime as dt
from pathlib import Path
import pyarrow as pa
import pyarrow.parquet as pq
from luigi_tasks.catalog import GREEN, YELLOW, ZONES
from luigi_tasks.duckdb import Warehouse, load

def halfway(done, total):
    if done * 2 >= total:
        print("halfway", flush=True)
        time.sleep(600)

warehouse = Warehouse(Path(sys.argv[1]), "prod", "table_updates")
table, when = sys.argv[3], sys.argv[4]
what = {"dataset": YELLOW, "month": dt.date.fromisoformat(when)} if when else {"dataset": ZONES, "month": None}
with pa.OSFile(sys.argv[2]) as parquet:  # a file object: the Arrow path, which reports progress
    load(warehouse, parquet, table=table, lake_file="1:b", progress=halfway, **what)
"""


def _kill_mid_insert(warehouse: Warehouse, parquet: Path, table: str = "yellow_tripdata", when: str = "2021-01-01"):
    args = [sys.executable, "-c", _KILLED_MID_INSERT, str(warehouse.path), str(parquet), table, when]
    child = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline() == "halfway\n"
    finally:
        child.kill()
        child.wait()


def test_kill_mid_load_then_rerun_counts_once(tmp_path):
    parquet = canonical(tmp_path, YELLOW, "2021-01", 400_000)
    warehouse = Warehouse(tmp_path / "w.duckdb", "prod", "table_updates")
    january = {month("2021-01"): "1:b"}
    counts = "SELECT count(*) FROM prod.yellow_tripdata"
    _kill_mid_insert(warehouse, parquet)
    assert loaded_months(warehouse, YELLOW, "yellow_tripdata", january) == set()
    assert query(warehouse.path, "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'prod'") == [(0,)]

    load(warehouse, parquet, dataset=YELLOW, table="yellow_tripdata", month=month("2021-01"), lake_file="1:b")
    assert query(warehouse.path, counts) == [(400_000,)]
    assert loaded_months(warehouse, YELLOW, "yellow_tripdata", january) == {month("2021-01")}

    # A reload killed midway leaves the old month whole, still marked done.
    _kill_mid_insert(warehouse, parquet)
    assert query(warehouse.path, counts) == [(400_000,)]
    assert loaded_months(warehouse, YELLOW, "yellow_tripdata", january) == {month("2021-01")}


def test_a_table_that_does_not_match_the_catalogue_is_an_error_and_nothing_changes(tmp_path):
    warehouse = Warehouse(tmp_path / "w.duckdb", "prod", "table_updates")
    with duckdb.connect(str(warehouse.path)) as conn:
        conn.execute('CREATE SCHEMA prod; CREATE TABLE prod.yellow_tripdata ("VendorID" INTEGER, extra_col VARCHAR)')
        conn.execute("INSERT INTO prod.yellow_tripdata VALUES (1, 'x')")
    parquet = canonical(tmp_path, YELLOW, "2021-01", 100)
    with pytest.raises(DataError) as raised:
        load(warehouse, parquet, dataset=YELLOW, table="yellow_tripdata", month=month("2021-01"), lake_file="1:a")
    message = str(raised.value)
    assert message.startswith(f"table prod.yellow_tripdata in {warehouse.path} does not match the yellow catalogue:")
    assert "unexpected extra_col" in message and "VendorID is INTEGER, expected BIGINT" in message
    assert query(warehouse.path, "SELECT * FROM prod.yellow_tripdata") == [(1, "x")]
    assert query(
        warehouse.path, "SELECT count(*) FROM information_schema.tables WHERE table_name = 'table_updates'"
    ) == [(0,)]


def test_a_file_held_by_another_process_is_one_line_and_nothing_partial(tmp_path, holder):
    warehouse = Warehouse(tmp_path / "w.duckdb", "prod", "table_updates", lock_wait=0.5)
    january, february = (canonical(tmp_path, YELLOW, at, 500, seed=n) for n, at in enumerate(["2021-01", "2021-02"]))
    common = {"dataset": YELLOW, "table": "yellow_tripdata", "lake_file": "1:a"}
    load(warehouse, january, month=month("2021-01"), **common)
    child = holder(warehouse.path)
    with pytest.raises(PipelineError) as raised:
        load(warehouse, february, month=month("2021-02"), **common)
    assert str(raised.value) == (
        f"yellow_tripdata:2021-02: DuckDB file {warehouse.path} is held open by another process ({PYTHON},"
        f" PID {child.pid}) for more than [duckdb] lock_wait = 0.5 seconds; close it there (DuckDB lets one process"
        " at a time use a file it writes) or raise lock_wait; nothing was loaded"
    )
    with pytest.raises(PipelineError, match=f"^checking yellow_tripdata: DuckDB file {warehouse.path} is held open by"):
        loaded_months(warehouse, YELLOW, "yellow_tripdata", {month("2021-01"): "1:a"})
    child.kill()
    child.wait()
    assert query(
        warehouse.path, "SELECT strftime(source_month, '%Y-%m'), count(*) FROM prod.yellow_tripdata GROUP BY 1"
    ) == [("2021-01", 500)]
    assert query(warehouse.path, "SELECT update_id FROM prod.table_updates") == [("yellow_tripdata:2021-01",)]


def test_a_held_file_reaches_the_command_line_in_one_line(served, server, tmp_path, holder):
    ingest(IngestMonth(service="yellow", month=JULY, sinks="lake"))
    child = holder(served)
    settings = {**pipeline_settings(server, tmp_path / "lake"), ("duckdb", "lock_wait"): "0.5"}
    config_file = write_config(tmp_path / "luigi.cfg", settings)
    done = luigi_command(["IngestMonth", "--service", "yellow", "--month", "2020-07", "--sinks", "lake,duckdb",
                          "--local-scheduler"], config_file)  # fmt: skip
    assert done.returncode != 0
    expected = (
        f"DuckDB file {served} is held open by another process ({PYTHON}, PID {child.pid}) for more than"
        " [duckdb] lock_wait = 0.5 seconds; close it there"
    )
    assert expected in done.stderr
    assert "Traceback" not in done.stderr


def test_a_month_redone_in_the_lake_loads_again(served, server, lake):
    ingest(IngestMonth(service="yellow", month=JULY, sinks="lake,duckdb"))
    task = LoadToDuckDB(service="yellow", month=JULY)
    assert task.complete()
    # The TLC republishes the month (here: its first 100 trips); the lake downloads and converts it again.
    serve_csv_month(server, "yellow", "2020-07", b"".join(YELLOW_HEAD.splitlines(keepends=True)[:101]))
    (lake / "raw/yellow/yellow_tripdata_2020-07.csv.gz").unlink()
    ingest(ToParquet(service="yellow", month=JULY, reload=True))
    assert manifest_rows(YELLOW, JULY) == 100
    assert not task.complete()
    ingest(IngestMonth(service="yellow", month=JULY, sinks="lake,duckdb"))
    assert task.complete()
    assert query(served, "SELECT count(*) FROM prod.yellow_tripdata") == [(100,)]


def test_a_remote_lake_loads(remote_lake, server, tmp_path):  # noqa: F811 - the fixture
    settings = {
        **pipeline_settings(server, tmp_path / "unused"),
        ("lake", "root"): remote_lake.root,
        ("lake", "scratch"): str(tmp_path / "scratch"),
        ("duckdb", "path"): str(tmp_path / "remote.duckdb"),
    }
    serve_csv_month(server, "yellow", "2020-07", YELLOW_HEAD)
    serve_zones(server)
    with luigi_settings(settings):
        ingest(IngestMonth(service="yellow", month=JULY, sinks="lake,duckdb"))
        rows = manifest_rows(YELLOW, JULY)
        assert LoadToDuckDB(service="yellow", month=JULY).complete()
    assert rows == 266
    assert query(tmp_path / "remote.duckdb", "SELECT count(*) FROM prod.yellow_tripdata") == [(rows,)]
    assert query(tmp_path / "remote.duckdb", "SELECT count(*) FROM prod.zones") == [(265,)]
    assert not (tmp_path / "unused").exists()


def test_the_course_join_and_trips_per_borough_answer_the_same_in_duckdb_and_postgresql(pg_lake, pg_dsn, server):
    serve_csv_month(server, "yellow", "2020-07", YELLOW_HEAD)
    serve_zones(server)
    ingest(IngestMonth(service="yellow", month=JULY, sinks="lake,duckdb,postgres"))
    answers = {}
    for sql in (BOROUGHS, COURSE_JOIN):
        duck_sql = sql.format(trips="prod.yellow_tripdata", zones="prod.zones")
        in_duckdb = query(pg_lake.parent / "taxi_rides_ny.duckdb", duck_sql)
        with psycopg2.connect(pg_dsn) as conn, conn.cursor() as cur:
            cur.execute(sql.format(trips="yellow_tripdata", zones="zones"))
            in_postgres = cur.fetchall()
        conn.close()
        assert in_duckdb == in_postgres
        answers[sql] = in_duckdb
    assert sum(n for _, n in answers[BOROUGHS]) == 266  # every trip of the sample has a known pickup zone
    assert len(answers[BOROUGHS]) > 1
    joined = answers[COURSE_JOIN]
    assert len(joined) == 266
    assert all(" / " in row[3] and " / " in row[4] for row in joined)


def test_settings_are_checked_in_one_line(lake):
    for key, value, expected in [
        ("schema", "raw data", "'raw data' is out of range: expected a plain SQL identifier (letters, digits, _;"),
        ("table", "{service}-trips", "'{service}-trips' is out of range: expected {service} and letters, digits, _"),
        ("table", "trips", "'trips' is out of range: expected {service} and letters, digits, _"),
        ("lock_wait", "-1", "-1.0 is out of range: expected 0 or more seconds"),
        ("memory_limit", "half", "'half' is out of range: expected a size such as 512MB or 2GB"),
        ("memory_limit", "512", "'512' is out of range: expected a size such as 512MB or 2GB"),
        ("threads", "-2", "-2 is out of range: expected 0 (one per core) to 1024"),
    ]:
        with luigi_settings({("duckdb", key): value}), pytest.raises(PipelineError) as raised:
            config.duckdb()
        assert str(raised.value).startswith(f"[duckdb] {key} {expected}")


def test_a_load_runs_within_the_configured_memory_bounds(lake, tmp_path):
    settings = {("duckdb", "memory_limit"): "300MB", ("duckdb", "threads"): "1"}
    settings[("duckdb", "temp_directory")] = str(tmp_path / "spill")
    with luigi_settings(settings):
        warehouse = configured_warehouse()
    with connection(warehouse, read_only=False, what="test") as conn:
        found = conn.execute(
            "SELECT current_setting('memory_limit'), current_setting('threads'), current_setting('temp_directory')"
        ).fetchone()
    assert found == ("286.1 MiB", 1, str(tmp_path / "spill"))  # DuckDB shows 300 MB in MiB
    with luigi_settings({}):
        default = configured_warehouse()
    with connection(default, read_only=False, what="test") as conn:
        assert conn.execute("SELECT current_setting('memory_limit')").fetchone() == ("488.2 MiB",)


def test_the_tasks_of_one_file_share_one_resource(lake, tmp_path):
    with luigi_settings({("duckdb", "path"): str(tmp_path / "w.duckdb")}):
        tasks = [LoadToDuckDB(service=name, month=JULY) for name in ("yellow", "green")]
        assert [t.resources for t in tasks] == [{f"duckdb:{tmp_path / 'w.duckdb'}": 1}] * 2


def test_backfill_and_its_table_of_months_name_the_duckdb_rows(tmp_path, server):
    serve_csv_month(server, "yellow", "2020-07", YELLOW_HEAD)
    serve_zones(server)
    config_file = write_config(tmp_path / "luigi.cfg", pipeline_settings(server, tmp_path / "lake"))
    args = ["yellow", "2020-07", "2020-07", "--sinks", "lake,duckdb"]
    done = luigi_command(args, config_file, program=BACKFILL)
    assert done.returncode == 0, done.stderr
    lines = summary_of(done.stderr)
    assert row(lines, "yellow", "2020-07")[2:] == [
        "done",
        "DownloadTripData, ToParquet, LoadToDuckDB, IngestMonth",
        "duckdb 266, lake 266",
    ]
    assert row(lines, "-", "-")[2:] == [
        "done",
        "DownloadZones, ZonesToParquet, LoadZonesToDuckDB, Backfill",
        "duckdb 265, lake 265",
    ]
    again = luigi_command([*args, "--dry-run"], config_file, program=BACKFILL)
    assert "yellow: 1 done 2020-07" in again.stdout and "yellow: 0 to run" in again.stdout, again.stdout


def test_a_path_that_is_not_a_duckdb_file_is_one_line_and_left_alone(tmp_path):
    warehouse = Warehouse(tmp_path / "notes.txt", "prod", "table_updates")
    warehouse.path.write_text("not a database\n")
    parquet = canonical(tmp_path, YELLOW, "2021-01", 100)
    with pytest.raises(PipelineError) as raised:
        load(warehouse, parquet, dataset=YELLOW, table="yellow_tripdata", month=month("2021-01"), lake_file="1:a")
    assert str(raised.value).startswith(f"yellow_tripdata:2021-01: cannot open DuckDB file {warehouse.path}: ")
    assert "\n" not in str(raised.value)
    assert warehouse.path.read_text() == "not a database\n"


OUR_ZONES = [("LocationID", "BIGINT"), ("Borough", "VARCHAR"), ("Zone", "VARCHAR"), ("service_zone", "VARCHAR")]
COURSE_ZONES = [("locationid", "INTEGER"), ("borough", "VARCHAR"), ("zone", "VARCHAR"), ("service_zone", "VARCHAR")]


def test_names_compare_as_duckdb_compares_them_and_a_type_difference_is_named(tmp_path):
    warehouse = Warehouse(tmp_path / "taxi_rides_ny.duckdb", "prod", "table_updates")
    course_dbt(warehouse.path, "prod", models=False)
    zones = tmp_path / "zones.parquet"
    pq.write_table(pa.table({"LocationID": [1], "Borough": ["EWR"], "Zone": ["Newark Airport"],
                             "service_zone": ["EWR"]}, schema=ZONES.schema), zones)  # fmt: skip
    with pytest.raises(DataError) as raised:  # the course's seed, as [duckdb] zones_table = taxi_zone_lookup finds it
        load(warehouse, zones, dataset=ZONES, table="taxi_zone_lookup", month=None, lake_file="1:a")
    assert str(raised.value) == (
        f"table prod.taxi_zone_lookup in {warehouse.path} does not match the zones catalogue: locationid is INTEGER,"
        " expected BIGINT. Nothing was changed: drop or rename the table, or set another [duckdb] schema or zones_table"
    )
    assert columns_of(warehouse.path, "prod", "taxi_zone_lookup") == COURSE_ZONES
    # A table whose names differ from the catalogue's in case only is the same table to DuckDB: it loads.
    columns = ", ".join(f"{c.name.lower()} {_DUCKDB_TYPES[c.type]}" for c in YELLOW.columns)
    with duckdb.connect(str(warehouse.path)) as conn:
        conn.execute(f"CREATE TABLE prod.yellow_tripdata ({columns}, source_month DATE NOT NULL)")
    parquet = canonical(tmp_path, YELLOW, "2021-01", 100)
    january = {"dataset": YELLOW, "table": "yellow_tripdata", "month": month("2021-01"), "lake_file": "1:a"}
    assert load(warehouse, parquet, **january) == 100
    assert loaded_months(warehouse, YELLOW, "yellow_tripdata", {month("2021-01"): "1:a"}) == {month("2021-01")}
    # PostgreSQL's names are case-sensitive (quoted identifiers): there they stay different columns.
    assert column_problems([("vendorid", "bigint")], [("VendorID", "bigint")]) == [
        "missing VendorID",
        "unexpected vendorid",
    ]


def test_the_courses_dbt_seed_models_and_full_refresh_in_prod_leave_our_loads_exact(served, server, tmp_path):
    serve_csv_month(server, "yellow", "2020-08", YELLOW_HEAD)  # the sample again: its pickups lie outside August
    serve_csv_month(server, "green", "2019-01", GREEN_HEAD)
    config_file = write_config(tmp_path / "luigi.cfg", pipeline_settings(server, served.parent / "lake"))

    def command(*args: str) -> None:
        done = luigi_command([*args, "--local-scheduler"], config_file)
        assert done.returncode == 0, done.stderr

    # `dbt seed --target prod` before our first load: the course's seed lands in prod first.
    course_dbt(served, "prod", models=False)
    command("IngestMonth", "--service", "yellow", "--month", "2020-07", "--sinks", "lake,duckdb")
    ingest(IngestMonth(service="green", month=month("2019-01"), sinks="lake,duckdb"))
    # `dbt build` on the dev target and on prod, then `dbt build --target prod --full-refresh`.
    course_dbt(served, "dev")
    course_dbt(served, "prod")
    course_dbt(served, "prod", full_refresh=True)
    # Our loads go on: a new month, a month and the zones loaded again.
    ingest(IngestMonth(service="yellow", month=month("2020-08"), sinks="lake,duckdb"))
    ingest(LoadToDuckDB(service="yellow", month=JULY, reload=True))
    command("LoadZonesToDuckDB", "--reload")

    trips = "SELECT strftime(source_month, '%Y-%m'), count(*) FROM prod.{}_tripdata GROUP BY 1 ORDER BY 1"
    assert query(served, trips.format("yellow")) == [("2020-07", 266), ("2020-08", 266)]
    assert query(served, trips.format("green")) == [("2019-01", manifest_rows(GREEN, month("2019-01")))]
    assert manifest_rows(YELLOW, month("2020-08")) == 266
    assert columns_of(served, "prod", "zones") == OUR_ZONES
    assert query(served, "SELECT count(*) FROM prod.zones") == [(manifest_rows(ZONES, None),)] == [(265,)]
    markers = query(served, "SELECT update_id, target_table, row_count FROM prod.table_updates ORDER BY 1")
    assert markers == [
        ("green_tripdata:2019-01", "green_tripdata", manifest_rows(GREEN, month("2019-01"))),
        ("yellow_tripdata:2020-07", "yellow_tripdata", 266),
        ("yellow_tripdata:2020-08", "yellow_tripdata", 266),
        ("zones", "zones", 265),
    ]
    # The course's seed and models are as dbt left them, and its views read our tables, the new month included.
    for schema in ("prod", "dev"):
        assert columns_of(served, schema, "taxi_zone_lookup") == COURSE_ZONES
        assert query(served, f"SELECT count(*) FROM {schema}.taxi_zone_lookup") == [(265,)]
        assert query(served, f"SELECT count(*) FROM {schema}.stg_yellow_tripdata") == [(532,)]
    # `dbt build --target prod` again: its facts take in the new month (every sample trip has a known pickup zone).
    course_dbt(served, "prod")
    facts = query(served, "SELECT service_type, count(*) FROM prod.fct_trips GROUP BY 1 ORDER BY 1")
    assert facts == [("Green", manifest_rows(GREEN, month("2019-01"))), ("Yellow", 532)]


def said(caplog, words: str) -> list[str]:
    """The messages logged that hold these words."""
    return [r.getMessage() for r in logged(caplog) if words in r.getMessage()]


def test_our_zones_table_under_its_former_name_moves_to_zones_in_the_load(served, lake, caplog):
    with luigi_settings({("duckdb", "zones_table"): "taxi_zone_lookup"}):  # an install from before the move
        ingest(IngestMonth(service="yellow", month=JULY, sinks="lake,duckdb"))
    rows = query(served, "SELECT * FROM prod.taxi_zone_lookup ORDER BY 1")
    markers = "SELECT update_id, target_table, row_count FROM prod.table_updates ORDER BY 1"
    before = query(served, markers)
    assert len(rows) == 265 and before[0] == ("taxi_zone_lookup", "taxi_zone_lookup", 265)
    # A load killed midway through the move leaves the table where it was, whole and marked.
    _kill_mid_insert(configured_warehouse(), lake / "zones/taxi_zone_lookup.parquet", table="zones", when="")
    assert query(served, "SELECT * FROM prod.taxi_zone_lookup ORDER BY 1") == rows
    assert query(served, markers) == before

    ingest(IngestMonth(service="yellow", month=JULY, sinks="lake,duckdb"))
    assert query(served, "SELECT * FROM prod.zones ORDER BY 1") == rows
    assert columns_of(served, "prod", "zones") == OUR_ZONES
    assert columns_of(served, "prod", "taxi_zone_lookup") == []
    assert query(served, markers) == [("yellow_tripdata:2020-07", "yellow_tripdata", 266), ("zones", "zones", 265)]
    assert said(caplog, "taxi_zone_lookup") == [
        f"{served}: the zones table prod.taxi_zone_lookup is renamed zones ([duckdb] zones_table), out of the way of"
        " the course's dbt seed"
    ]


def test_the_courses_seed_in_place_of_our_former_zones_table_is_left_alone(served, caplog):
    with luigi_settings({("duckdb", "zones_table"): "taxi_zone_lookup"}):  # an install from before the move
        ingest(IngestMonth(service="yellow", month=JULY, sinks="lake,duckdb"))
    # `dbt seed --target prod --full-refresh`: the course's seed replaces it; our marker row stays behind.
    course_dbt(served, "prod", models=False, full_refresh=True)
    ingest(IngestMonth(service="yellow", month=JULY, sinks="lake,duckdb"))
    assert columns_of(served, "prod", "taxi_zone_lookup") == COURSE_ZONES
    assert query(served, "SELECT count(*) FROM prod.taxi_zone_lookup") == [(265,)]
    assert columns_of(served, "prod", "zones") == OUR_ZONES
    assert query(served, "SELECT count(*) FROM prod.zones") == [(265,)]
    assert query(served, "SELECT update_id, target_table, row_count FROM prod.table_updates ORDER BY 1") == [
        ("yellow_tripdata:2020-07", "yellow_tripdata", 266),
        ("zones", "zones", 265),
    ]
    assert said(caplog, "taxi_zone_lookup") == [
        f"{served}: prod.taxi_zone_lookup is not the zones table loaded here any more: its marker row is dropped, the"
        " table left as it is"
    ]


def test_a_file_the_courses_sources_cannot_name_is_said_once(served, server, tmp_path):
    serve_csv_month(server, "yellow", "2020-08", YELLOW_HEAD)
    path = tmp_path / "trips.duckdb"
    settings = {**pipeline_settings(server, served.parent / "lake"), ("duckdb", "path"): str(path)}
    config_file = write_config(tmp_path / "luigi.cfg", settings)
    args = ["yellow", "2020-07", "2020-08", "--sinks", "lake,duckdb", "--workers", "2"]
    done = luigi_command(args, config_file, program=BACKFILL)  # three loads, in two worker processes
    assert done.returncode == 0, done.stderr
    warning = f"DuckDB file {path}: {COURSE_NAME_RULE.format(database='trips')}"
    assert done.stderr.count(warning) == done.stderr.count('Catalog "taxi_rides_ny"') == 1, done.stderr
    assert query(path, "SELECT count(*) FROM prod.yellow_tripdata") == [(532,)]
