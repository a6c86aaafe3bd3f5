"""Fault injection: kill a backfill anywhere, rerun it, and find every month exactly once in every sink.

Marked `faults` so it can run alone: `pytest -m faults`.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import psycopg2
import pyarrow.parquet as pq
import pytest

from luigi_tasks.convert import read_manifest
from luigi_tasks.synthetic import write_trip_csv
from tests.conftest import REPO, command_env, month, pipeline_settings, serve_csv_month, serve_zones, write_config

pytestmark = pytest.mark.faults

SERVICES = ("yellow", "green")
MONTHS = ("2020-01", "2020-02", "2020-03")
SEEDS = range(10)


def _serve_months(server, tmp_path: Path) -> None:
    from luigi_tasks.catalog import SERVICES as CATALOGUE

    for service in SERVICES:
        for at in MONTHS:
            raw = write_trip_csv(tmp_path / f"{service}-{at}.csv", CATALOGUE[service], month(at), 60_000, seed=len(at))
            serve_csv_month(server, service, at, raw.read_bytes())
    serve_zones(server)


def _backfill(config: Path, sinks: str = "lake,postgres") -> subprocess.Popen:
    env = command_env(config)
    args = [",".join(SERVICES), MONTHS[0], MONTHS[-1], "--sinks", sinks]
    return subprocess.Popen([str(REPO / "bin/backfill"), *args], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)  # fmt: skip


def _check_whole(lake: Path, dsn: str) -> None:
    """Every sink holds each month once, as many rows as its manifest; nothing partial anywhere."""
    leftovers = [p for p in lake.rglob("*") if ".part-" in p.name]
    assert leftovers == [], leftovers
    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        for service in SERVICES:
            cur.execute(f"SELECT source_month::text, count(*) FROM {service}_tripdata GROUP BY 1 ORDER BY 1")
            counts = dict(cur.fetchall())
            for at in MONTHS:
                parquet = lake / service / at[:4] / f"{service}_tripdata_{at}.parquet"
                assert counts[f"{at}-01"] == read_manifest(parquet).rows_out == pq.read_metadata(parquet).num_rows
            cur.execute(f"SELECT count(*) FROM (SELECT DISTINCT * FROM {service}_tripdata) d")
            assert cur.fetchone()[0] == sum(counts.values())  # no row twice
        cur.execute("SELECT update_id FROM table_updates ORDER BY 1")
        markers = [row[0] for row in cur.fetchall()]
    conn.close()
    assert markers == sorted([f"{s}_tripdata:{at}" for s in SERVICES for at in MONTHS] + ["zones"])


def _markers_have_data(dsn: str) -> None:
    """After a kill: every marker's month is whole (a month without a marker may hold nothing or an old whole)."""
    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        cur.execute("SELECT to_regclass('table_updates') IS NOT NULL")
        if not cur.fetchone()[0]:
            return
        cur.execute("SELECT update_id FROM table_updates WHERE update_id LIKE '%%_tripdata:%%'")
        for (update,) in cur.fetchall():
            table, at = update.split(":")
            cur.execute(f"SELECT count(*) FROM {table} WHERE source_month = %s", (f"{at}-01",))
            assert cur.fetchone()[0] == 60_000, update
    conn.close()


@pytest.mark.parametrize("seed", SEEDS)
def test_kill_anywhere_then_rerun_counts_once(seed, tmp_path, server, pg_dsn):
    _serve_months(server, tmp_path)
    lake = tmp_path / "lake"
    config = write_config(tmp_path / "luigi.cfg", {**pipeline_settings(server, lake), ("postgres", "dsn"): pg_dsn})
    kills = random.Random(seed)
    for _ in range(2):  # kill it twice, at seeded moments, before letting it finish
        run = _backfill(config)
        time.sleep(kills.uniform(0.3, 4.0))
        os.killpg(run.pid, signal.SIGKILL)
        run.wait()
        _markers_have_data(pg_dsn)
    final = _backfill(config)
    assert final.wait(timeout=300) == 0
    _check_whole(lake, pg_dsn)


def test_database_restarted_mid_copy_fails_cleanly_then_loads_exactly(tmp_path):
    """The server goes down in the middle of a COPY and comes back: the load fails with a clear error,
    nothing is marked, and the next load is exact."""
    from luigi_tasks.catalog import YELLOW
    from luigi_tasks.convert import to_canonical_parquet
    from luigi_tasks.postgres import done_updates, load_month
    from tests.postgres_cluster import PostgresCluster

    raw = write_trip_csv(tmp_path / "yellow.csv", YELLOW, month("2021-01"), 600_000, seed=5)
    parquet = tmp_path / "yellow.parquet"
    to_canonical_parquet(raw, parquet, dataset=YELLOW, month=month("2021-01"), source_url="x")
    cluster = PostgresCluster().start()  # its own server: this test stops it
    try:
        env = {**os.environ, "PGPASSWORD": cluster.password}
        code = (
            "import sys, datetime as dt; from pathlib import Path; from luigi_tasks.catalog import YELLOW\n"
            "from luigi_tasks.postgres import load_month; from luigi_tasks.errors import PipelineError\n"
            "try:\n    load_month(sys.argv[1], Path(sys.argv[2]), dataset=YELLOW, month=dt.date(2021, 1, 1),"
            " marker_table='table_updates')\nexcept PipelineError as e:\n    print(e); sys.exit(3)"
        )
        child = subprocess.Popen([sys.executable, "-c", code, cluster.dsn, str(parquet)], env=env,
                                 stdout=subprocess.PIPE, text=True)  # fmt: skip
        deadline = time.monotonic() + 60
        while True:
            with psycopg2.connect(cluster.dsn, password=cluster.password) as conn, conn.cursor() as cur:
                cur.execute("SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'COPY%%' AND state = 'active'")
                copying = cur.fetchone()[0]
            conn.close()
            if copying:
                break
            assert child.poll() is None and time.monotonic() < deadline
            time.sleep(0.01)
        cluster.stop("fast")
        out, _ = child.communicate(timeout=60)
        assert child.returncode == 3
        assert out.startswith(f"PostgreSQL at luigi@127.0.0.1:{cluster.port}/postgres: ")
        assert cluster.password not in out
        cluster.start()
        os.environ["PGPASSWORD"], saved = cluster.password, os.environ.get("PGPASSWORD")
        try:
            assert done_updates(cluster.dsn, "table_updates", ["yellow_tripdata:2021-01"]) == set()
            assert (
                load_month(cluster.dsn, parquet, dataset=YELLOW, month=month("2021-01"), marker_table="table_updates")
                == 600_000
            )
            with psycopg2.connect(cluster.dsn) as conn, conn.cursor() as cur:
                cur.execute("SELECT count(*) FROM yellow_tripdata")
                assert cur.fetchone()[0] == 600_000
            conn.close()
        finally:
            if saved is None:
                os.environ.pop("PGPASSWORD")
            else:
                os.environ["PGPASSWORD"] = saved
    finally:
        cluster.remove()


@pytest.mark.parametrize("seed", SEEDS)
def test_kill_anywhere_with_every_sink_then_rerun_counts_once(
    seed,
    tmp_path,
    server,
    pg_dsn,
    gcs_client,
    gcs_bucket,
    bigquery_dataset,
    bigquery_env,
    bigquery_client,
    s3_bucket,
    s3_env,
):
    from luigi_tasks.gcs import fingerprint
    from luigi_tasks.s3 import client as s3_client
    from luigi_tasks.s3 import expected_etag

    _serve_months(server, tmp_path)
    lake = tmp_path / "lake"
    settings = {
        **pipeline_settings(server, lake),
        ("postgres", "dsn"): pg_dsn,
        ("gcp", "project"): "test-project",
        ("gcp", "bucket"): gcs_bucket,
        ("gcp", "dataset"): bigquery_dataset,
        ("s3", "bucket"): s3_bucket,
    }
    config = write_config(tmp_path / "luigi.cfg", settings)
    kills = random.Random(100 + seed)
    for _ in range(2):
        run = _backfill(config, sinks="lake,postgres,gcs,bigquery,s3")
        time.sleep(kills.uniform(0.5, 8.0))
        os.killpg(run.pid, signal.SIGKILL)
        run.wait()
    final = _backfill(config, sinks="lake,postgres,gcs,bigquery,s3")
    assert final.wait(timeout=300) == 0
    _check_whole(lake, pg_dsn)
    objects = {b.name: b for b in gcs_client.list_blobs(gcs_bucket)}
    s3_objects = {o["Key"]: o for o in s3_client().list_objects_v2(Bucket=s3_bucket)["Contents"]}
    assert s3_client().list_multipart_uploads(Bucket=s3_bucket).get("Uploads", []) == []
    for service in SERVICES:
        rows = bigquery_client.query(
            f"SELECT CAST(source_month AS STRING), COUNT(*) FROM `{bigquery_dataset}.{service}_tripdata` GROUP BY 1"
        ).result()
        counts = {row[0]: row[1] for row in rows}
        for at in MONTHS:
            parquet = lake / service / at[:4] / f"{service}_tripdata_{at}.parquet"
            assert counts[f"{at}-01"] == read_manifest(parquet).rows_out
            blob = objects[f"raw/{service}/{at[:4]}/{parquet.name}"]
            assert (blob.size, blob.crc32c) == (fingerprint(parquet).size, fingerprint(parquet).crc32c)
            assert s3_objects[f"raw/{service}/{at[:4]}/{parquet.name}"]["ETag"].strip('"') == expected_etag(parquet)
    # A run killed between a month's commit and its staging table's drop may leave that table; it is not
    # the month's data. Real BigQuery expires it after a day (the emulator does not keep expirations).


def _ingest(config: Path, service: str, at: str, sinks: str) -> subprocess.Popen:
    return subprocess.Popen([str(REPO / "bin/ingest-month"), service, at, "--sinks", sinks], cwd=REPO,
                            env=command_env(config), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)  # fmt: skip


def _wait_for(condition, run: subprocess.Popen, what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert run.poll() is None, f"the run ended (code {run.returncode}) before {what}"
        assert time.monotonic() < deadline, f"no {what} after {timeout:.0f}s"
        time.sleep(0.002)


def test_kill_mid_conversion_leaves_only_a_dead_part_file_then_rerun_converts_exactly(tmp_path, server):
    from luigi_tasks.catalog import YELLOW

    raw = write_trip_csv(tmp_path / "yellow.csv", YELLOW, month("2020-01"), 800_000, seed=11)
    serve_csv_month(server, "yellow", "2020-01", raw.read_bytes())
    serve_zones(server)
    lake = tmp_path / "lake"
    config = write_config(tmp_path / "luigi.cfg", pipeline_settings(server, lake))
    folder = lake / "yellow/2020"
    final = folder / "yellow_tripdata_2020-01.parquet"

    run = _ingest(config, "yellow", "2020-01", "lake")
    _wait_for(lambda: any(folder.glob(f".{final.name}.part-*")), run, "Parquet part file")
    os.killpg(run.pid, signal.SIGKILL)
    run.wait()
    assert not final.exists()  # nothing that looks done
    assert [p.name.split(".part-")[0] for p in folder.glob(".*.part-*")] == [f".{final.name}"]

    rerun = _ingest(config, "yellow", "2020-01", "lake")
    assert rerun.wait(timeout=300) == 0
    assert list(folder.glob(".*")) == []  # the dead writer's part file is gone
    assert read_manifest(final).rows_out == pq.read_metadata(final).num_rows == 800_000


def test_kill_mid_s3_multipart_upload_then_rerun_aborts_it_and_uploads_once(tmp_path, server, s3_client, s3_bucket):
    import threading

    from luigi_tasks.catalog import YELLOW
    from luigi_tasks.s3 import PART_BYTES, expected_etag
    from tests.fault_proxy import FaultProxy

    raw = write_trip_csv(tmp_path / "yellow.csv", YELLOW, month("2020-01"), 400_000, seed=11)
    serve_csv_month(server, "yellow", "2020-01", raw.read_bytes())
    serve_zones(server)
    lake = tmp_path / "lake"
    key = "raw/yellow/2020/yellow_tripdata_2020-01.parquet"
    reached, release = threading.Event(), threading.Event()

    def hold() -> None:  # a part's request waits here until the run that sent it is dead
        reached.set()
        release.wait(timeout=120)

    with FaultProxy(s3_client.meta.endpoint_url) as proxy:
        proxy.inject("PUT", r"partNumber=", "forward", before=hold)
        config = write_config(tmp_path / "luigi.cfg", {**pipeline_settings(server, lake), ("s3", "bucket"): s3_bucket})
        env_endpoint = os.environ["AWS_ENDPOINT_URL"]
        os.environ["AWS_ENDPOINT_URL"] = proxy.url
        try:
            run = _ingest(config, "yellow", "2020-01", "s3")
        finally:
            os.environ["AWS_ENDPOINT_URL"] = env_endpoint
        _wait_for(reached.is_set, run, "multipart upload")
        os.killpg(run.pid, signal.SIGKILL)
        run.wait()
        release.set()
    local = lake / "yellow/2020/yellow_tripdata_2020-01.parquet"
    assert local.stat().st_size > PART_BYTES  # the upload was multipart
    assert [u["Key"] for u in s3_client.list_multipart_uploads(Bucket=s3_bucket).get("Uploads", [])] == [key]
    assert "Contents" not in s3_client.list_objects_v2(Bucket=s3_bucket, Prefix=key)  # the upload never completed

    rerun = _ingest(config, "yellow", "2020-01", "s3")
    assert rerun.wait(timeout=300) == 0
    assert s3_client.list_multipart_uploads(Bucket=s3_bucket).get("Uploads", []) == []  # the dead upload aborted
    [stored] = s3_client.list_objects_v2(Bucket=s3_bucket, Prefix=key)["Contents"]
    assert (stored["Key"], stored["ETag"].strip('"')) == (key, expected_etag(local))
