"""The lake on object storage: fake-gcs-server, moto S3 and Azurite behind a proxy that sees every request.

The whole main job into the lake and PostgreSQL, a rerun that reads no data file, a run killed while it
publishes, a root that is not a lake, and two workers of one luigid with nothing shared but the lake.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import psycopg2
import pytest

from luigi_tasks import config, history
from luigi_tasks.catalog import ZONES, service
from luigi_tasks.errors import DataError, PipelineError
from luigi_tasks.lake import Lake, canonical_key, open_lake
from luigi_tasks.tasks.backfill import Backfill
from luigi_tasks.tasks.ingest import IngestMonth
from tests.conftest import (
    DATA,
    REPO,
    command_env,
    luigi_settings,
    month,
    pipeline_settings,
    run_tasks,
    serve_csv_month,
    serve_zones,
    write_config,
)
from tests.emulators import PROJECT
from tests.fault_proxy import FaultProxy
from tests.test_scheduler import luigid  # noqa: F401 - the fixture

YELLOW_HEAD = (DATA / "yellow_tripdata_2020-07_head266.csv").read_bytes()
GREEN_HEAD = (DATA / "green_tripdata_2019-01_head99.csv").read_bytes()


@dataclass
class RemoteLake:
    kind: str
    root: str  # gs://bucket/lake, s3://bucket/lake or az://container/lake
    server: object  # the emulator (its .url)
    variable: str  # the environment variable that points the clients at it
    keys: callable  # () -> sorted keys under the root
    value: callable = str  # the variable's value that points the clients at a URL

    def point(self, monkeypatch, url: str) -> None:
        monkeypatch.setenv(self.variable, self.value(url))


@pytest.fixture(params=["gcs", "s3", "azure"])
def remote_lake(request) -> RemoteLake:
    if request.param == "gcs":
        server = request.getfixturevalue("gcs_server")
        client, bucket = request.getfixturevalue("gcs_client"), request.getfixturevalue("gcs_bucket")

        def keys() -> list[str]:
            return sorted(b.name.removeprefix("lake/") for b in client.list_blobs(bucket, prefix="lake/"))

        return RemoteLake("gcs", f"gs://{bucket}/lake", server, "STORAGE_EMULATOR_HOST", keys)
    if request.param == "azure":
        server = request.getfixturevalue("azure_env")
        container = request.getfixturevalue("azure_client").get_container_client(
            request.getfixturevalue("azure_container")
        )

        def keys() -> list[str]:
            return sorted(b.name.removeprefix("lake/") for b in container.list_blobs(name_starts_with="lake/"))

        root = f"az://{container.container_name}/lake"
        return RemoteLake("azure", root, server, "AZURE_STORAGE_CONNECTION_STRING", keys, server.connection_string)
    server = request.getfixturevalue("s3_env")
    client, bucket = request.getfixturevalue("s3_client"), request.getfixturevalue("s3_bucket")

    def keys() -> list[str]:
        listed = client.list_objects_v2(Bucket=bucket, Prefix="lake/").get("Contents", [])
        return sorted(item["Key"].removeprefix("lake/") for item in listed)

    return RemoteLake("s3", f"s3://{bucket}/lake", server, "AWS_ENDPOINT_URL", keys)


@pytest.fixture
def lake_reads(monkeypatch) -> list[str]:
    """Keys whose bytes the lake hands out (every read of a lake file goes through these two methods)."""
    reads: list[str] = []
    for name in ("open_input", "local_copy"):
        real = getattr(Lake, name)

        def spy(self, key, _real=real):
            reads.append(key)
            return _real(self, key)

        monkeypatch.setattr(Lake, name, spy)
    return reads


@pytest.fixture
def remote_settings(remote_lake, server, tmp_path, pg_dsn) -> Iterator[dict]:
    settings = {
        **pipeline_settings(server, tmp_path / "unused"),
        ("lake", "root"): remote_lake.root,
        ("lake", "scratch"): str(tmp_path / "scratch"),
        ("postgres", "dsn"): pg_dsn,
    }
    with luigi_settings(settings):
        yield settings


def manifest_rows(root: str, dataset_name: str, when: str | None) -> int:
    lake = config.lake().open() if root is None else open_lake(root, "", _endpoints())
    dataset = ZONES if dataset_name == "zones" else service(dataset_name)
    entry = lake.entry(canonical_key(dataset, month(when) if when else None))
    assert entry is not None, f"{dataset_name} {when} is not complete in {root}"
    return entry.manifest.rows_out


def _endpoints() -> tuple[str, ...]:
    return (*(os.environ.get(v, "") for v in ("STORAGE_EMULATOR_HOST", "AWS_ENDPOINT_URL")), config.azure_endpoint())


def pg_count(dsn: str, table: str, when: str | None = None) -> int:
    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        if when is None:
            cur.execute(f"SELECT count(*) FROM {table}")
        else:
            cur.execute(f"SELECT count(*) FROM {table} WHERE source_month = %s", (month(when),))
        return cur.fetchone()[0]


def test_the_main_job_on_an_object_store_lake_and_a_rerun_that_reads_no_data(
    remote_lake, remote_settings, server, pg_dsn, tmp_path, lake_reads
):
    serve_csv_month(server, "yellow", "2020-07", YELLOW_HEAD)
    serve_zones(server)
    result, failures = run_tasks(IngestMonth(service="yellow", month=month("2020-07"), sinks=("lake", "postgres")))
    assert failures == {}, failures
    assert result.scheduling_succeeded
    assert remote_lake.keys() == [
        "raw/yellow/_yellow_tripdata_2020-07.csv.gz.json",  # the source's validators of the download
        "raw/yellow/yellow_tripdata_2020-07.csv.gz",
        "raw/zones/_taxi_zone_lookup.csv.json",
        "raw/zones/taxi_zone_lookup.csv",
        "yellow/2020/_yellow_tripdata_2020-07.json",
        "yellow/2020/yellow_tripdata_2020-07.parquet",
        "zones/_taxi_zone_lookup.json",
        "zones/taxi_zone_lookup.parquet",
    ]
    rows = manifest_rows(remote_lake.root, "yellow", "2020-07")
    assert rows == 266  # the sample has 266 rows
    assert pg_count(pg_dsn, "yellow_tripdata", "2020-07") == rows
    assert pg_count(pg_dsn, "zones") == manifest_rows(remote_lake.root, "zones", None) == 265
    # LoadToPostgres streamed the Parquet from the lake; nothing of the month is left in scratch.
    assert [p for p in (tmp_path / "scratch").rglob("*") if p.is_file()] == []
    assert not (tmp_path / "unused").exists()  # no local lake was made

    assert "yellow/2020/yellow_tripdata_2020-07.parquet" in lake_reads  # streamed into PostgreSQL from the lake
    lake_reads.clear()
    downloads = server.total_requests()
    result, failures = run_tasks(
        Backfill(services=("yellow",), start=month("2020-07"), stop=month("2020-07"), sinks=("lake", "postgres"))
    )
    assert failures == {}
    assert "Did not run any tasks" in result.summary_text
    assert server.total_requests() == downloads
    assert lake_reads == []


def test_a_run_killed_while_publishing_to_the_lake_leaves_nothing_that_looks_done(
    remote_lake, remote_settings, server, pg_dsn, tmp_path, monkeypatch
):
    serve_csv_month(server, "yellow", "2020-07", YELLOW_HEAD)
    serve_zones(server)
    killed = threading.Event()
    # The run's requests pass through a proxy that holds the Parquet's upload until the run is killed, then
    # drops it: the upload never completes, as when a machine dies mid-upload.
    proxy = FaultProxy(remote_lake.server.url).start()
    remote_lake.point(monkeypatch, proxy.url)
    if remote_lake.kind == "gcs":
        upload = proxy.inject("POST", r"uploadType=(multipart|resumable)", "cut", before=lambda: killed.wait(60),
                                          body=r"yellow_tripdata_2020-07\.parquet")  # fmt: skip
    elif remote_lake.kind == "azure":  # the commit of its blocks: they stay staged, uncommitted, invisible
        upload = proxy.inject("PUT", r"yellow_tripdata_2020-07\.parquet\?.*comp=blocklist", "cut",
                                          before=lambda: killed.wait(60))  # fmt: skip
    else:
        upload = proxy.inject("PUT", r"yellow_tripdata_2020-07\.parquet", "cut",
                                          before=lambda: killed.wait(60))  # fmt: skip
    config_file = write_config(tmp_path / "luigi.cfg", remote_settings)
    run = subprocess.Popen(
        [str(REPO / "bin/ingest-month"), "yellow", "2020-07"],
        env=command_env(config_file),
        cwd=tmp_path,
        stdout=(tmp_path / "run.log").open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 60
        while upload.hits == 0:
            assert run.poll() is None, f"the run ended before publishing the Parquet: {proxy.seen}"
            assert time.monotonic() < deadline, "the Parquet upload never started"
            time.sleep(0.05)
        os.killpg(run.pid, signal.SIGKILL)
        run.wait(10)
    finally:
        killed.set()
        proxy.stop()
        remote_lake.point(monkeypatch, remote_lake.server.url)
    keys = remote_lake.keys()
    assert "yellow/2020/yellow_tripdata_2020-07.parquet" not in keys
    assert "yellow/2020/_yellow_tripdata_2020-07.json" not in keys
    assert "raw/yellow/yellow_tripdata_2020-07.csv.gz" in keys  # the download had been published whole

    result, failures = run_tasks(IngestMonth(service="yellow", month=month("2020-07")))
    assert failures == {}
    assert manifest_rows(remote_lake.root, "yellow", "2020-07") == 266  # the sample has 266 rows
    # The dead writer's scratch folder went at the next run's start (its pid is gone).
    assert [p for p in (tmp_path / "scratch").rglob("*") if p.is_file()] == []


def test_a_root_that_is_not_a_lake_is_one_line(tmp_path, gcs_env, s3_env):
    with pytest.raises(DataError, match=r"^\[lake\] root 'ftp://host/x': unknown scheme ftp://; expected"):
        Lake("ftp://host/x")
    with pytest.raises(DataError, match=r"names no bucket"):
        Lake("gs://")
    with pytest.raises(PipelineError, match=r"^\[lake\] root gs://no-such-bucket/x: bucket no-such-bucket does not"):
        open_lake("gs://no-such-bucket/x", "", _endpoints())
    with pytest.raises(PipelineError, match=r"^\[lake\] root s3://no-such-bucket/x: bucket no-such-bucket does not"):
        open_lake("s3://no-such-bucket/x", "", _endpoints())
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    with pytest.raises(DataError, match=r"is a file; expected a directory"):
        open_lake(str(a_file), "", ())


def test_an_azure_root_that_is_not_a_lake_is_one_line(azure_env, azure_container, monkeypatch):
    with pytest.raises(DataError, match=r"^\[lake\] root 'az://' names no container; expected az://container/prefix$"):
        Lake("az://")
    with pytest.raises(DataError, match=r"^\[lake\] root 'abfss://Trips_2020/x': 'Trips_2020' is not an Azure"):
        Lake("abfss://Trips_2020/x")
    with pytest.raises(PipelineError, match=r"^\[lake\] root az://no-such-container/x: container no-such-container"):
        open_lake("az://no-such-container/x", "", _endpoints())
    assert open_lake(f"abfs://{azure_container}/x", "", _endpoints()).uri("k") == f"abfs://{azure_container}/x/k"
    monkeypatch.delenv("AZURE_STORAGE_CONNECTION_STRING")
    with pytest.raises(PipelineError, match=r"^\[lake\] root az://c0ntainer/x: no Azure storage account") as raised:
        Lake("az://c0ntainer/x")
    assert "\n" not in str(raised.value)
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", "AccountName=devstoreaccount1;AccountKey=")
    with pytest.raises(PipelineError, match=r"lacks AccountName and AccountKey") as raised:
        Lake("az://c0ntainer/x")
    assert "devstoreaccount1" not in str(raised.value)


def finish(runs: list[subprocess.Popen], timeout: float) -> list[str]:
    """The outputs of runs that must all end within `timeout`; if one does not, all are killed and shown."""
    deadline = time.monotonic() + timeout
    try:
        return [run.communicate(timeout=max(deadline - time.monotonic(), 1))[0] for run in runs]
    except subprocess.TimeoutExpired:
        for run in runs:
            run.kill()
        shown = [[line for line in run.communicate()[0].splitlines() if not line.startswith("DEBUG")] for run in runs]
        pytest.fail(
            f"the runs did not end within {timeout:.0f} s:\n"
            + "\n-----\n".join("\n".join(lines[-40:]) for lines in shown)
        )


def two_machines_backfill(luigid_port, server, tmp_path, pg_dsn, root, cloud, args, sinks):
    """bin/backfill ARGS on two "machines" (own working, scratch and state directories) sharing only luigid and
    the lake; every run must end well. Returns the machines (home, env) and the tasks that ran (history DONE)."""
    machines = []
    for name in ("a", "b"):
        home = tmp_path / name
        home.mkdir()
        settings = {
            **pipeline_settings(server, home / "unused"),
            ("lake", "root"): root,
            ("lake", "scratch"): str(home / "scratch"),
            ("postgres", "dsn"): pg_dsn,
            **cloud,
        }
        del settings[("history", "path")]  # each machine's own history, in its state dir
        env = {**command_env(write_config(home / "luigi.cfg", settings)), "LUIGI_TASKS_STATE_DIR": str(home / "state")}
        machines.append((home, env))
    command = [str(REPO / "bin/backfill"), *args, "--sinks", sinks,
               "--scheduler-host", "127.0.0.1", "--scheduler-port", str(luigid_port), "--worker-keep-alive",
               "--no-lock", "--workers", "2"]  # fmt: skip
    runs = [subprocess.Popen(command, cwd=home, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            for home, env in machines]  # fmt: skip
    outputs = finish(runs, timeout=120)
    for run, output in zip(runs, outputs, strict=True):
        assert run.returncode in (0, 10, 25), output[-3000:]  # see test_two_workers_on_one_backfill_do_each_month_once

    recorded = [r for home, _ in machines for r in history.runs(home / "state/history.sqlite", limit=1000)]
    assert [r for r in recorded if r["status"] not in ("DONE", "SKIPPED")] == []
    recorded = [r for r in recorded if r["status"] == "DONE"]  # SKIPPED: handed out again, found done
    ran = [r["task_id"] for r in recorded]
    assert len(ran) == len(set(ran)), "a task ran twice"
    assert {r["host"] for r in recorded}, "nothing ran"
    return machines, recorded


def test_two_machines_share_one_backfill_through_luigid_and_a_gcs_lake(
    luigid,  # noqa: F811 - the fixture
    server,
    tmp_path,
    pg_dsn,
    gcs_bucket,
    bigquery_env,
    bigquery_client,
    bigquery_dataset,
):
    """Two workers with their own working and scratch directories (two machines) share only luigid and the
    lake: every task runs once, the counts are exact, no task fails."""
    months = ["2020-07", "2020-08", "2020-09"]
    for when in months:
        serve_csv_month(server, "yellow", when, YELLOW_HEAD)
        serve_csv_month(server, "green", when, GREEN_HEAD)
    serve_zones(server)
    root = f"gs://{gcs_bucket}/lake"
    cloud = {("gcp", "project"): PROJECT, ("gcp", "dataset"): bigquery_dataset, ("gcp", "bucket"): gcs_bucket}
    machines, recorded = two_machines_backfill(
        luigid, server, tmp_path, pg_dsn, root, cloud, ["yellow,green", months[0], months[-1]], "lake,postgres,bigquery"
    )
    families = [r["task_family"] for r in recorded]
    for family in ("DownloadTripData", "ToParquet", "LoadToPostgres", "LoadToBigQuery"):
        assert families.count(family) == 6, (family, families)
    assert "UploadToGCS" not in families  # BigQuery loads from the lake's own objects
    for home, _ in machines:
        assert not (home / "unused").exists()

    with luigi_settings({("lake", "root"): root}):
        for name in ("yellow", "green"):
            for when in months:
                rows = manifest_rows(None, name, when)
                assert pg_count(pg_dsn, f"{name}_tripdata", when) == rows
                table = f"{bigquery_dataset}.{name}_tripdata"
                counted = bigquery_client.query(
                    f"SELECT COUNT(*) FROM `{table}` WHERE source_month = DATE '{when}-01'"
                ).to_arrow(create_bqstorage_client=False)
                assert counted.column(0)[0].as_py() == rows


def test_two_machines_share_one_backfill_through_luigid_and_an_azure_lake(
    luigid,  # noqa: F811 - the fixture
    server,
    tmp_path,
    pg_dsn,
    azure_env,
    azure_container,
):
    """The set-up of the GCS case above, unchanged but for the root: every task once, counts exact."""
    months = ["2020-07", "2020-08"]
    for when in months:
        serve_csv_month(server, "yellow", when, YELLOW_HEAD)
    serve_zones(server)
    root = f"az://{azure_container}/lake"
    _, recorded = two_machines_backfill(
        luigid, server, tmp_path, pg_dsn, root, {}, ["yellow", months[0], months[-1]], "lake,postgres"
    )
    families = [r["task_family"] for r in recorded]
    for family in ("DownloadTripData", "ToParquet", "LoadToPostgres"):
        assert families.count(family) == 2, (family, families)
    for when in months:
        assert pg_count(pg_dsn, "yellow_tripdata", when) == manifest_rows(root, "yellow", when) == 266
