"""The PostgreSQL sink against a real server: exact counts on rerun, kill, reload; clear errors."""

from __future__ import annotations

import collections
import os
import signal
import subprocess
import sys
import threading
import time

import luigi
import psycopg2
import pyarrow.parquet as pq
import pytest

from luigi_tasks import IngestMonth, LoadToPostgres, ToParquet
from luigi_tasks.catalog import GREEN, YELLOW, ZONES
from luigi_tasks.convert import to_canonical_parquet
from luigi_tasks.errors import DataError, PipelineError
from luigi_tasks.postgres import done_updates, load_month, load_zones, loaded_months
from luigi_tasks.synthetic import write_trip_csv
from luigi_tasks.tasks.sinks import done_by_sink
from tests.conftest import DATA, luigi_settings, month, run_tasks, serve_csv_month, serve_zones

YELLOW_HEAD = (DATA / "yellow_tripdata_2020-07_head266.csv").read_bytes()
GREEN_HEAD = (DATA / "green_tripdata_2019-01_head99.csv").read_bytes()


def query(dsn: str, sql: str, args: tuple = ()) -> list[tuple]:
    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        cur.execute(sql, args)
        rows = cur.fetchall()
    conn.close()
    return rows


def month_counts(dsn: str, table: str) -> dict[str, int]:
    rows = query(dsn, f"SELECT to_char(source_month, 'YYYY-MM'), count(*) FROM {table} GROUP BY 1 ORDER BY 1")
    return dict(rows)


def canonical(tmp_path, dataset, at: str, rows: int, seed: int = 1):
    raw = write_trip_csv(tmp_path / f"{dataset.name}_tripdata_{at}.csv", dataset, month(at), rows, seed=seed)
    dest = tmp_path / f"{dataset.name}_{at}.parquet"
    to_canonical_parquet(raw, dest, dataset=dataset, month=month(at), source_url="file://test")
    return dest


def test_load_twice_counts_once(pg_lake, pg_dsn, server):
    serve_csv_month(server, "yellow", "2020-07", YELLOW_HEAD)
    serve_zones(server)
    task = IngestMonth(service="yellow", month=month("2020-07"), sinks="lake,postgres")
    result, failures = run_tasks(task)
    assert failures == {} and result.status == luigi.LuigiStatusCode.SUCCESS
    assert month_counts(pg_dsn, "yellow_tripdata") == {"2020-07": 266}
    assert query(pg_dsn, "SELECT count(*) FROM zones") == [(265,)]

    result, _ = run_tasks(IngestMonth(service="yellow", month=month("2020-07"), sinks="lake,postgres"))
    assert "Did not run any tasks" in result.summary_text
    result, _ = run_tasks(LoadToPostgres(service="yellow", month=month("2020-07"), reload=True))
    assert result.status == luigi.LuigiStatusCode.SUCCESS
    assert month_counts(pg_dsn, "yellow_tripdata") == {"2020-07": 266}
    distinct = query(pg_dsn, "SELECT count(*) FROM (SELECT DISTINCT * FROM yellow_tripdata) d")
    assert distinct == [(266,)]  # the head has no duplicate rows, so nothing was loaded twice
    markers = query(pg_dsn, "SELECT update_id, target_table FROM table_updates ORDER BY 1")
    assert markers == [("yellow_tripdata:2020-07", "yellow_tripdata"), ("zones", "zones")]


def test_columns_keep_tlc_spelling_and_types(pg_dsn, tmp_path):
    parquet = canonical(tmp_path, YELLOW, "2021-01", 1000)
    load_month(pg_dsn, parquet, dataset=YELLOW, month=month("2021-01"), marker_table="table_updates")
    types = dict(
        query(
            pg_dsn,
            "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = 'yellow_tripdata'",
        )
    )
    assert types["PULocationID"] == "bigint"
    assert types["passenger_count"] == "bigint"
    assert types["total_amount"] == "double precision"
    assert types["tpep_pickup_datetime"] == "timestamp without time zone"
    assert types["store_and_fwd_flag"] == "text"
    assert types["source_month"] == "date"
    assert len(types) == len(YELLOW.columns) + 1


def test_zoomcamp_query_joining_trips_to_zones(pg_dsn, tmp_path):
    trips = tmp_path / "yellow.parquet"
    (tmp_path / "y.csv").write_bytes(YELLOW_HEAD)
    to_canonical_parquet(tmp_path / "y.csv", trips, dataset=YELLOW, month=month("2020-07"), source_url="x")
    zones = tmp_path / "zones.parquet"
    to_canonical_parquet(DATA / "taxi_zone_lookup.csv", zones, dataset=ZONES, month=None, source_url="x")
    load_month(pg_dsn, trips, dataset=YELLOW, month=month("2020-07"), marker_table="table_updates")
    assert load_zones(pg_dsn, zones, marker_table="table_updates") == 265

    got = dict(
        query(
            pg_dsn,
            """SELECT z."Borough", count(*) FROM yellow_tripdata t
               JOIN zones z ON t."PULocationID" = z."LocationID" GROUP BY 1""",
        )
    )
    borough = {row["LocationID"]: row["Borough"] for row in pq.read_table(zones).to_pylist()}
    expected = collections.Counter(borough[pu] for pu in pq.read_table(trips)["PULocationID"].to_pylist())
    assert got == dict(expected)
    assert query(pg_dsn, """SELECT "Zone", service_zone FROM zones WHERE "LocationID" = 265""") == [("NA", "N/A")]


def test_green_all_blank_ehail_fee(pg_dsn, tmp_path):
    (tmp_path / "g.csv").write_bytes(GREEN_HEAD)
    parquet = tmp_path / "g.parquet"
    to_canonical_parquet(tmp_path / "g.csv", parquet, dataset=GREEN, month=month("2019-01"), source_url="x")
    assert load_month(pg_dsn, parquet, dataset=GREEN, month=month("2019-01"), marker_table="table_updates") == 99
    rows = query(pg_dsn, "SELECT count(*), count(ehail_fee), min(lpep_pickup_datetime)::text FROM green_tripdata")
    # The file's first trip picked up on 2018-12-21: it stays with the file's month, not lost.
    assert rows == [(99, 0, "2018-12-21 15:17:29")]
    assert month_counts(pg_dsn, "green_tripdata") == {"2019-01": 99}


def test_reload_of_one_month_leaves_the_other_untouched(pg_dsn, tmp_path):
    january = canonical(tmp_path, YELLOW, "2021-01", 3000, seed=1)
    february = canonical(tmp_path, YELLOW, "2021-02", 2000, seed=2)
    for parquet, at in ((january, "2021-01"), (february, "2021-02")):
        load_month(pg_dsn, parquet, dataset=YELLOW, month=month(at), marker_table="table_updates")
    fingerprint = (
        "SELECT count(*), sum(total_amount), max(xmin::text::bigint) FROM yellow_tripdata WHERE source_month = %s"
    )
    february_before = query(pg_dsn, fingerprint, ("2021-02-01",))
    marker_before = query(pg_dsn, "SELECT inserted FROM table_updates WHERE update_id = 'yellow_tripdata:2021-02'")

    load_month(pg_dsn, january, dataset=YELLOW, month=month("2021-01"), marker_table="table_updates")
    assert month_counts(pg_dsn, "yellow_tripdata") == {"2021-01": 3000, "2021-02": 2000}
    assert query(pg_dsn, fingerprint, ("2021-02-01",)) == february_before  # same rows, same transaction ids
    assert query(pg_dsn, "SELECT inserted FROM table_updates WHERE update_id = 'yellow_tripdata:2021-02'") == (
        marker_before
    )
    assert done_updates(pg_dsn, "table_updates", ["yellow_tripdata:2021-01", "yellow_tripdata:2021-03"]) == {
        "yellow_tripdata:2021-01"
    }


def tables(dsn: str) -> list[str]:
    return [row[0] for row in query(dsn, "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1")]


def _copy_in_progress(dsn: str) -> bool:
    rows = query(
        dsn,
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'luigi_tasks' AND query LIKE 'COPY%%'"
        " AND state = 'active'",
    )
    return rows[0][0] > 0


def _kill_load_mid_copy(dsn: str, parquet, at: str) -> None:
    code = (
        "import sys, datetime as dt; from pathlib import Path; from luigi_tasks.catalog import YELLOW; "
        "from luigi_tasks.postgres import load_month; "
        "load_month(sys.argv[1], Path(sys.argv[2]), dataset=YELLOW, month=dt.date.fromisoformat(sys.argv[3]), "
        "marker_table='table_updates')"
    )
    child = subprocess.Popen([sys.executable, "-c", code, dsn, str(parquet), at + "-01"], env=os.environ.copy())
    deadline = time.monotonic() + 60
    while not _copy_in_progress(dsn):
        assert child.poll() is None, "the load ended before it could be killed"
        assert time.monotonic() < deadline
        time.sleep(0.01)
    child.send_signal(signal.SIGKILL)
    child.wait()
    while query(dsn, "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'luigi_tasks'")[0][0]:
        time.sleep(0.05)  # the server notices the dead client and rolls its transaction back


def test_kill_mid_copy_then_rerun_counts_once(pg_dsn, tmp_path):
    parquet = canonical(tmp_path, YELLOW, "2021-01", 600_000)
    _kill_load_mid_copy(pg_dsn, parquet, "2021-01")
    assert done_updates(pg_dsn, "table_updates", ["yellow_tripdata:2021-01"]) == set()
    assert month_counts(pg_dsn, "yellow_tripdata") == {}

    assert [t for t in tables(pg_dsn) if "_load_" in t] != []  # the dead load's staging table

    load_month(pg_dsn, parquet, dataset=YELLOW, month=month("2021-01"), marker_table="table_updates")
    assert month_counts(pg_dsn, "yellow_tripdata") == {"2021-01": 600_000}
    assert done_updates(pg_dsn, "table_updates", ["yellow_tripdata:2021-01"]) == {"yellow_tripdata:2021-01"}
    assert tables(pg_dsn) == ["table_updates", "yellow_tripdata", "yellow_tripdata_2021_01"]  # dropped by the rerun

    # A reload killed midway leaves the old month whole, still marked done.
    _kill_load_mid_copy(pg_dsn, parquet, "2021-01")
    assert month_counts(pg_dsn, "yellow_tripdata") == {"2021-01": 600_000}
    assert done_updates(pg_dsn, "table_updates", ["yellow_tripdata:2021-01"]) == {"yellow_tripdata:2021-01"}


def test_conflicting_table_is_an_error_and_nothing_changes(pg_dsn, tmp_path):
    with psycopg2.connect(pg_dsn) as conn, conn.cursor() as cur:
        cur.execute('CREATE TABLE yellow_tripdata ("VendorID" integer, tpep_pickup_datetime text, extra_col text)')
        cur.execute("INSERT INTO yellow_tripdata VALUES (1, 'x', 'y')")
    conn.close()
    parquet = canonical(tmp_path, YELLOW, "2021-01", 100)
    with pytest.raises(DataError) as error:
        load_month(pg_dsn, parquet, dataset=YELLOW, month=month("2021-01"), marker_table="table_updates")
    message = str(error.value)
    assert message.startswith("table yellow_tripdata does not match the yellow catalogue: missing ")
    assert "unexpected extra_col" in message
    assert "VendorID is integer, expected bigint" in message
    assert "tpep_pickup_datetime is text, expected timestamp without time zone" in message
    assert query(pg_dsn, "SELECT * FROM yellow_tripdata") == [(1, "x", "y")]
    assert query(pg_dsn, "SELECT to_regclass('table_updates') IS NULL") == [(True,)]


def test_unreachable_database_names_host_and_port_not_the_password(lake, server, pg_dsn):
    serve_csv_month(server, "yellow", "2020-07", YELLOW_HEAD)
    dead = f"host=127.0.0.1 port=1 user=luigi password=hunter2-secret dbname={pg_dsn.split('dbname=')[1]}"
    with luigi_settings({("postgres", "dsn"): dead}):
        result, failures = run_tasks(LoadToPostgres(service="yellow", month=month("2020-07")))
    assert not result.scheduling_succeeded
    assert "hunter2" not in result.summary_text
    with pytest.raises(PipelineError) as error:
        done_updates(dead, "table_updates", ["yellow_tripdata:2020-07"])
    message = str(error.value)
    assert message.startswith(f"cannot connect to PostgreSQL at luigi@127.0.0.1:1/{pg_dsn.split('dbname=')[1]}: ")
    assert "hunter2" not in message and "Connection refused" in message

    with luigi_settings({("postgres", "dsn"): pg_dsn}):
        result, failures = run_tasks(LoadToPostgres(service="yellow", month=month("2020-07")))
    assert failures == {}
    assert month_counts(pg_dsn, "yellow_tripdata") == {"2020-07": 266}


def test_wrong_password_is_masked(pg_dsn):
    with pytest.raises(PipelineError) as error:
        done_updates(pg_dsn + " password=wrong-pass-123", "table_updates", ["x"])
    assert "wrong-pass-123" not in str(error.value)
    assert "password authentication failed" in str(error.value)


def test_a_detached_partition_is_refused_not_loaded_into(pg_dsn, tmp_path):
    january = canonical(tmp_path, YELLOW, "2021-01", 300)
    load_month(pg_dsn, january, dataset=YELLOW, month=month("2021-01"), marker_table="table_updates", lake_file="1:a")
    assert loaded_months(pg_dsn, "table_updates", YELLOW, {month("2021-01"): "1:a"}) == {month("2021-01")}
    with psycopg2.connect(pg_dsn) as conn, conn.cursor() as cur:
        cur.execute("ALTER TABLE yellow_tripdata DETACH PARTITION yellow_tripdata_2021_01")
    conn.close()
    with pytest.raises(DataError, match=r"^table yellow_tripdata_2021_01 exists but is not a partition of yellow_"):
        load_month(pg_dsn, january, dataset=YELLOW, month=month("2021-01"), marker_table="table_updates")
    assert query(pg_dsn, "SELECT count(*) FROM yellow_tripdata_2021_01") == [(300,)]  # untouched
    assert month_counts(pg_dsn, "yellow_tripdata") == {}
    assert loaded_months(pg_dsn, "table_updates", YELLOW, {month("2021-01"): "1:a"}) == set()


def test_a_month_redone_in_the_lake_is_loaded_again(pg_lake, pg_dsn, server):
    # A marker table of luigi's PostgresTarget shape, from before lake files were recorded, keeps working.
    with psycopg2.connect(pg_dsn) as conn, conn.cursor() as cur:
        cur.execute("CREATE TABLE table_updates (update_id TEXT PRIMARY KEY, target_table TEXT, inserted TIMESTAMP)")
    conn.close()
    july = month("2020-07")
    serve_csv_month(server, "yellow", "2020-07", YELLOW_HEAD)
    serve_zones(server)
    assert run_tasks(IngestMonth(service="yellow", month=july, sinks="lake,postgres"))[1] == {}
    assert month_counts(pg_dsn, "yellow_tripdata") == {"2020-07": 266}

    first_100 = b"".join(YELLOW_HEAD.splitlines(keepends=True)[:101])  # the header and 100 trips
    serve_csv_month(server, "yellow", "2020-07", first_100)
    for raw in pg_lake.glob("raw/**/*.csv.gz"):
        raw.unlink()  # the month is downloaded again, as when the TLC republishes it
    assert run_tasks(ToParquet(service="yellow", month=july, reload=True))[1] == {}
    assert LoadToPostgres(service="yellow", month=july).complete() is False
    assert july not in done_by_sink(YELLOW, [july], ("postgres",))[1]["postgres"]

    assert run_tasks(IngestMonth(service="yellow", month=july, sinks="lake,postgres"))[1] == {}
    assert month_counts(pg_dsn, "yellow_tripdata") == {"2020-07": 100}
    assert query(pg_dsn, "SELECT count(*) FROM (SELECT DISTINCT * FROM yellow_tripdata) d") == [(100,)]
    assert LoadToPostgres(service="yellow", month=july).complete() is True
    assert july in done_by_sink(YELLOW, [july], ("postgres",))[1]["postgres"]


@pytest.mark.parametrize(
    "held, at, table",
    [
        # A session that locked the table against schema changes: attaching a new month waits for it.
        ("LOCK TABLE yellow_tripdata IN SHARE MODE", "2020-08", "yellow_tripdata"),
        # An open transaction that read the month: replacing it needs the partition to itself.
        ("SELECT count(*) FROM yellow_tripdata_2020_07", "2020-07", "yellow_tripdata_2020_07"),
    ],
)
def test_a_load_waits_for_a_lock_at_most_lock_timeout(pg_lake, pg_dsn, server, held, at, table):
    for at_month in ("2020-07", "2020-08"):
        serve_csv_month(server, "yellow", at_month, YELLOW_HEAD)
    assert run_tasks(LoadToPostgres(service="yellow", month=month("2020-07")))[1] == {}
    markers = query(pg_dsn, "SELECT * FROM table_updates")
    holder = psycopg2.connect(pg_dsn)
    holder.cursor().execute(held)  # its transaction stays open
    try:
        with luigi_settings({("postgres", "lock_timeout"): "1"}):
            _, failures = run_tasks(LoadToPostgres(service="yellow", month=month(at), reload=True))
        assert [str(error) for error in failures.values()] == [
            f"yellow_tripdata:{at}: another session held a lock on {table} for more than [postgres] lock_timeout = 1"
            " seconds (a long query or an open transaction); nothing was loaded"
        ]
        # The load gave up its place in the lock queue: another reader goes straight through.
        with psycopg2.connect(pg_dsn, options="-c statement_timeout=5000") as reader, reader.cursor() as cur:
            cur.execute("SELECT count(*) FROM yellow_tripdata")
            assert cur.fetchone() == (266,)
        reader.close()
    finally:
        holder.close()
    assert month_counts(pg_dsn, "yellow_tripdata") == {"2020-07": 266}
    assert query(pg_dsn, "SELECT * FROM table_updates") == markers
    assert tables(pg_dsn) == ["table_updates", "yellow_tripdata", "yellow_tripdata_2020_07"]  # no staging left


def test_a_new_month_is_attached_while_a_reader_has_the_table_open(pg_dsn, tmp_path):
    january = canonical(tmp_path, YELLOW, "2021-01", 3000, seed=1)
    load_month(pg_dsn, january, dataset=YELLOW, month=month("2021-01"), marker_table="table_updates")
    reader = psycopg2.connect(pg_dsn)
    try:
        with reader.cursor() as cur:
            cur.execute("SELECT count(*) FROM yellow_tripdata")  # its transaction stays open
            february = canonical(tmp_path, YELLOW, "2021-02", 2000, seed=2)
            load_month(pg_dsn, february, dataset=YELLOW, month=month("2021-02"), marker_table="table_updates",
                       lock_timeout=1)  # fmt: skip
            cur.execute("SELECT count(*) FROM yellow_tripdata")
            assert cur.fetchone() == (5000,)  # read committed: the next statement sees the new month whole
    finally:
        reader.close()


def test_readers_are_not_held_behind_a_reload_that_waits_for_a_long_reader(pg_dsn, tmp_path):
    july = canonical(tmp_path, YELLOW, "2020-07", 3000, seed=1)
    load_month(pg_dsn, july, dataset=YELLOW, month=month("2020-07"), marker_table="table_updates")
    (tmp_path / "again").mkdir()
    again = canonical(tmp_path / "again", YELLOW, "2020-07", 2000, seed=2)
    long_reader = psycopg2.connect(pg_dsn)
    long_reader.cursor().execute("SELECT count(*) FROM yellow_tripdata")  # its transaction stays open
    errors: list[BaseException] = []

    def reload() -> None:
        try:
            load_month(pg_dsn, again, dataset=YELLOW, month=month("2020-07"), marker_table="table_updates",
                       lock_timeout=30)  # fmt: skip
        except BaseException as exc:
            errors.append(exc)

    loader = threading.Thread(target=reload)
    loader.start()
    try:
        deadline = time.monotonic() + 30
        while not query(pg_dsn, "SELECT 1 FROM pg_locks WHERE NOT granted AND locktype = 'relation'"):
            assert time.monotonic() < deadline, "the reload never waited for the long reader"
            time.sleep(0.05)
        # Dashboards meanwhile: each query waits at most one of the reload's short lock attempts, not its 30 s.
        for _ in range(3):
            with psycopg2.connect(pg_dsn, options="-c statement_timeout=5000") as reader, reader.cursor() as cur:
                cur.execute("SELECT count(*) FROM yellow_tripdata")
                assert cur.fetchone() == (3000,)
            reader.close()
            time.sleep(1)
        assert loader.is_alive()  # still waiting for the long reader, as it must
    finally:
        long_reader.close()
        loader.join(60)
    assert errors == []
    assert month_counts(pg_dsn, "yellow_tripdata") == {"2020-07": 2000}
    assert tables(pg_dsn) == ["table_updates", "yellow_tripdata", "yellow_tripdata_2020_07"]


def test_a_marker_table_without_a_primary_key_is_one_line_saying_what_to_do(pg_dsn, tmp_path):
    query_ddl = "CREATE TABLE table_updates (update_id TEXT, target_table TEXT, inserted TIMESTAMP, lake_file TEXT)"
    with psycopg2.connect(pg_dsn) as conn, conn.cursor() as cur:
        cur.execute(query_ddl)
    conn.close()
    parquet = canonical(tmp_path, YELLOW, "2021-01", 100)
    with pytest.raises(DataError) as error:
        load_month(pg_dsn, parquet, dataset=YELLOW, month=month("2021-01"), marker_table="table_updates")
    assert str(error.value) == (
        "[postgres] marker_table table_updates has no primary key on update_id, which a load needs to record its"
        " month once: add it with ALTER TABLE table_updates ADD PRIMARY KEY (update_id), or set another"
        " [postgres] marker_table; nothing was loaded"
    )
    assert query(pg_dsn, "SELECT count(*) FROM table_updates") == [(0,)]
    assert query(pg_dsn, "SELECT to_regclass('yellow_tripdata') IS NULL") == [(True,)]  # nothing made, nothing loaded
    with psycopg2.connect(pg_dsn) as conn, conn.cursor() as cur:
        cur.execute("ALTER TABLE table_updates ADD PRIMARY KEY (update_id)")
    conn.close()
    assert load_month(pg_dsn, parquet, dataset=YELLOW, month=month("2021-01"), marker_table="table_updates") == 100
