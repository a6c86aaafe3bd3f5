"""PostgreSQL loads started at the same moment by separate processes: each month once, one marker, no error."""

from __future__ import annotations

import multiprocessing
import time
from pathlib import Path

import psycopg2
import pyarrow.parquet as pq

from luigi_tasks import postgres
from luigi_tasks.catalog import GREEN, YELLOW, ZONES, Dataset
from luigi_tasks.convert import read_manifest, to_canonical_parquet
from luigi_tasks.postgres import load_month, load_zones
from tests.conftest import DATA, month
from tests.test_new_columns import lake_file, requests
from tests.test_postgres import canonical, query

# fork: the children start at once (no re-import), so their loads really overlap.
_FORK = multiprocessing.get_context("fork")


def _load(barrier, results, index: int, dsn: str, parquet: Path, dataset: Dataset | None, at: str | None) -> None:
    barrier.wait()
    try:
        if dataset is None:
            rows = load_zones(dsn, parquet, marker_table="table_updates")
        else:
            rows = load_month(dsn, parquet, dataset=dataset, month=month(at), marker_table="table_updates")
        results.put((index, rows))
    except Exception as exc:  # reported to the test, which shows it
        results.put((index, f"{type(exc).__name__}: {exc}"))


def start_loads(dsn: str, jobs: list[tuple[Path, Dataset | None, str | None]]):
    """Start each (parquet, dataset or None for zones, month) load in its own process, all released at once."""
    barrier, results = _FORK.Barrier(len(jobs)), _FORK.Queue()
    for i, job in enumerate(jobs):
        _FORK.Process(target=_load, args=(barrier, results, i, dsn, *job), daemon=True).start()
    return results


def outcomes(results, count: int) -> list[int | str]:
    """Each load's rows, or its error, in the order the loads were given."""
    found = dict(results.get(timeout=120) for _ in range(count))
    return [found[i] for i in range(count)]


def load_at_once(dsn: str, jobs: list[tuple[Path, Dataset | None, str | None]]) -> list[int | str]:
    return outcomes(start_loads(dsn, jobs), len(jobs))


def zones_parquet(tmp_path: Path) -> Path:
    dest = tmp_path / "zones.parquet"
    to_canonical_parquet(DATA / "taxi_zone_lookup.csv", dest, dataset=ZONES, month=None, source_url="x")
    return dest


def _folder(parent: Path, name: str) -> Path:
    (parent / name).mkdir()
    return parent / name


def test_two_loads_of_one_month_at_once_leave_it_once(pg_dsn, tmp_path):
    # Two versions of the month (say, a reload of a redone month racing a backfill): the table ends up with one.
    versions = [canonical(_folder(tmp_path, f"v{seed}"), YELLOW, "2021-01", 300_000, seed=seed) for seed in (1, 2)]
    rows = read_manifest(versions[0]).rows_out
    totals = {round(pq.read_table(v, columns=["total_amount"])["total_amount"].to_numpy().sum(), 2) for v in versions}
    assert len(totals) == 2
    # Twice: into an empty database, then over a month already loaded (a reload racing a reload).
    for _ in range(2):
        assert load_at_once(pg_dsn, [(v, YELLOW, "2021-01") for v in versions]) == [rows, rows]
        assert query(pg_dsn, "SELECT count(*) FROM yellow_tripdata") == [(rows,)]
        assert query(pg_dsn, "SELECT count(*) FROM (SELECT DISTINCT * FROM yellow_tripdata) d") == [(rows,)]
        # Every row from one load: the month is one version, never a mix of two.
        [(total,)] = query(pg_dsn, "SELECT round(sum(total_amount)::numeric, 2) FROM yellow_tripdata")
        assert float(total) in totals
        assert query(pg_dsn, "SELECT update_id FROM table_updates") == [("yellow_tripdata:2021-01",)]
        assert query(pg_dsn, "SELECT count(*) FROM pg_tables WHERE tablename LIKE '%%\\_load\\_%%'") == [(0,)]


def test_two_loads_of_the_zones_at_once_leave_them_once(pg_dsn, tmp_path):
    parquet = zones_parquet(tmp_path)
    assert load_at_once(pg_dsn, [(parquet, None, None)] * 2) == [265, 265]
    assert query(pg_dsn, 'SELECT count(*), count(DISTINCT "LocationID"), count(DISTINCT xmin::text) FROM zones') == [
        (265, 265, 1)
    ]
    assert query(pg_dsn, "SELECT update_id FROM table_updates") == [("zones",)]


def test_first_loads_of_several_tables_at_once_into_an_empty_database(pg_dsn, tmp_path):
    yellow = canonical(tmp_path, YELLOW, "2021-01", 2_000)
    green = canonical(tmp_path, GREEN, "2021-01", 1_000)
    jobs = [(yellow, YELLOW, "2021-01"), (green, GREEN, "2021-01"), (zones_parquet(tmp_path), None, None)]
    assert load_at_once(pg_dsn, jobs) == [2_000, 1_000, 265]
    assert query(pg_dsn, "SELECT update_id FROM table_updates ORDER BY 1") == [
        ("green_tripdata:2021-01",),
        ("yellow_tripdata:2021-01",),
        ("zones",),
    ]


def _waiting_loads(dsn: str) -> int:
    rows = query(
        dsn,
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'luigi_tasks' AND wait_event_type = 'Lock'",
    )
    return rows[0][0]


def test_marker_table_created_meanwhile_by_another_client(pg_dsn, tmp_path):
    """luigi's own PostgresTarget shares the marker table and creates it without our lock: both loads go on."""
    other = psycopg2.connect(pg_dsn)
    with other.cursor() as cur:  # luigi's SQL, not yet committed: the loads meet the table mid-creation
        cur.execute(
            "CREATE TABLE IF NOT EXISTS table_updates"
            " (update_id TEXT PRIMARY KEY, target_table TEXT, inserted TIMESTAMP DEFAULT NOW())"
        )
    yellow = canonical(tmp_path, YELLOW, "2021-01", 1_000)
    green = canonical(tmp_path, GREEN, "2021-01", 1_000)
    results = start_loads(pg_dsn, [(yellow, YELLOW, "2021-01"), (green, GREEN, "2021-01")])
    deadline = time.monotonic() + 60
    while _waiting_loads(pg_dsn) < 2:
        assert time.monotonic() < deadline, "the loads never waited for the marker table"
        time.sleep(0.02)
    other.commit()
    other.close()
    assert outcomes(results, 2) == [1_000, 1_000]
    assert query(pg_dsn, "SELECT update_id FROM table_updates ORDER BY 1") == [
        ("green_tripdata:2021-01",),
        ("yellow_tripdata:2021-01",),
    ]


def test_a_load_that_waited_sees_the_partition_another_load_committed_meanwhile(pg_dsn, tmp_path):
    # The other load is played by this test: it holds the month's turn until the load below waits for it, then
    # commits the month's partition. The waiting load must see that partition and replace it, not trip over it.
    parquet = canonical(tmp_path, YELLOW, "2021-01", 2_000)
    rows = read_manifest(parquet).rows_out
    other = psycopg2.connect(pg_dsn)
    try:
        with other.cursor() as cur:
            cur.execute("SELECT pg_advisory_xact_lock(hashtext('yellow_tripdata:2021-01'))")
            results = start_loads(pg_dsn, [(parquet, YELLOW, "2021-01")])
            deadline = time.monotonic() + 60
            while True:  # until the load waits for the month's turn
                cur.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted")
                if cur.fetchone()[0] or time.monotonic() > deadline:
                    break
                time.sleep(0.05)
            cur.execute(
                "CREATE TABLE yellow_tripdata_2021_01 PARTITION OF yellow_tripdata FOR VALUES IN ('2021-01-01');"
                " INSERT INTO yellow_tripdata (source_month) VALUES ('2021-01-01')"
            )
        other.commit()
    finally:
        other.close()
    assert outcomes(results, 1) == [rows]
    assert query(pg_dsn, "SELECT count(*) FROM yellow_tripdata") == [(rows,)]
    assert query(pg_dsn, "SELECT count(*) FROM pg_tables WHERE tablename LIKE '%%\\_load\\_%%'") == [(0,)]


def test_two_months_that_bring_the_same_new_column_at_once_both_load_and_add_it_once(pg_dsn, tmp_path):
    may = lake_file(tmp_path / "may", YELLOW, "2026-05", 100, seed=1)
    assert load_month(pg_dsn, may, dataset=YELLOW, month=month("2026-05"), marker_table="table_updates") == 100
    june, july = (lake_file(tmp_path / at, YELLOW, at, rows, seed=rows, extra=requests(rows))
                  for at, rows in (("2026-06", 300), ("2026-07", 200)))  # fmt: skip
    assert load_at_once(pg_dsn, [(june, YELLOW, "2026-06"), (july, YELLOW, "2026-07")]) == [300, 200]
    added = query(
        pg_dsn,
        "SELECT attname, col_description(attrelid, attnum) FROM pg_attribute"
        " WHERE attrelid = 'yellow_tripdata'::regclass AND attname LIKE 'request%%' ORDER BY attnum",
    )
    assert [name for name, _ in added] == ["request_source", "request_count"]
    assert {note for _, note in added} <= {"added by yellow 2026-06", "added by yellow 2026-07"}
    counts = "SELECT to_char(source_month, 'YYYY-MM'), count(*), count(request_count) FROM yellow_tripdata GROUP BY 1"
    assert sorted(query(pg_dsn, counts)) == [("2026-05", 100, 0), ("2026-06", 300, 300), ("2026-07", 200, 200)]


def test_a_column_another_months_load_adds_during_a_copy_is_given_to_its_staging_table(pg_dsn, tmp_path, monkeypatch):
    june = lake_file(tmp_path / "june", YELLOW, "2026-06", 300, seed=1)
    july = lake_file(tmp_path / "july", YELLOW, "2026-07", 200, seed=2, extra=requests(200))
    copy, started = postgres._copy_in_streams, []

    def july_loads_meanwhile(*args, **kwargs) -> int:
        if not started:  # June's staging table is made, without the column July brings: July loads now, whole
            started.append(True)
            assert load_month(pg_dsn, july, dataset=YELLOW, month=month("2026-07"), marker_table="table_updates") == 200
        return copy(*args, **kwargs)

    monkeypatch.setattr(postgres, "_copy_in_streams", july_loads_meanwhile)
    assert load_month(pg_dsn, june, dataset=YELLOW, month=month("2026-06"), marker_table="table_updates") == 300
    counts = "SELECT to_char(source_month, 'YYYY-MM'), count(*), count(request_source) FROM yellow_tripdata GROUP BY 1"
    assert sorted(query(pg_dsn, counts)) == [("2026-06", 300, 0), ("2026-07", 200, 134)]
    assert query(pg_dsn, "SELECT update_id FROM table_updates ORDER BY 1") == [
        ("yellow_tripdata:2026-06",),
        ("yellow_tripdata:2026-07",),
    ]
