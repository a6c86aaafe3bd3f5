"""Service faults in the cloud sinks: GCS stopped mid-upload, BigQuery answering errors.

The emulators sit behind `FaultProxy`, which breaks chosen requests; the official clients see a real
service misbehave. Each case: the run retries and completes, or fails with a clear one-line error and
nothing half done; a later run completes exactly.
"""

from __future__ import annotations

import luigi
import pytest

from luigi_tasks import LoadToBigQuery, UploadToGCS, config
from luigi_tasks import bigquery as bq_work
from luigi_tasks import gcs as gcs_work
from luigi_tasks.convert import read_manifest
from luigi_tasks.synthetic import write_trip_csv
from tests.conftest import luigi_settings, month, run_tasks, serve_csv_month
from tests.emulators import PROJECT, FakeGcsServer, fresh_name
from tests.fault_proxy import FaultProxy

pytestmark = pytest.mark.faults

RETRY_SECONDS = 5  # how long the clients retry here: enough for a few backoffs, giving up in seconds
BIG_MONTH = 400_000  # rows: a Parquet over 8 MiB, which the client uploads in resumable chunks
SESSION_START = r"uploadType=resumable$|uploadType=resumable&(?!.*upload_id)"
CHUNK = r"upload_id="
JOBS = r"/bigquery/v2/projects/[^/]+/jobs\?"


def _serve_month(server, tmp_path, service: str, at: str, rows: int) -> None:
    from luigi_tasks.catalog import SERVICES

    raw = write_trip_csv(tmp_path / f"{service}-{at}.csv", SERVICES[service], month(at), rows, seed=7)
    serve_csv_month(server, service, at, raw.read_bytes())


@pytest.fixture
def gcs_proxied(tmp_path, lake, monkeypatch):
    """A fake-gcs-server of this test's own (so it can be stopped) behind a FaultProxy, with a bucket."""
    emulator = FakeGcsServer(tmp_path / "gcs")
    with FaultProxy(emulator.url) as proxy:
        emulator.external_url = proxy.url  # resumable uploads continue through the proxy
        emulator.start()
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", proxy.url)
        bucket = fresh_name("bucket")
        settings = {
            ("gcp", "project"): PROJECT,
            ("gcp", "bucket"): bucket,
            ("gcp", "retry_seconds"): str(RETRY_SECONDS),
        }
        with luigi_settings(settings):
            gcs_work.client(config.gcp()).create_bucket(bucket)
            yield emulator, proxy, bucket
        emulator.stop()


def _objects(bucket: str) -> dict[str, object]:
    return {blob.name: blob for blob in gcs_work.client(config.gcp()).list_blobs(bucket)}


def _whole_object(lake, bucket: str, service: str, at: str) -> None:
    local = lake / service / at[:4] / f"{service}_tripdata_{at}.parquet"
    name = f"raw/{service}/{at[:4]}/{local.name}"
    objects = _objects(bucket)
    assert list(objects) == [name]
    fingerprint = gcs_work.fingerprint(local)
    assert (objects[name].size, objects[name].crc32c) == (fingerprint.size, fingerprint.crc32c)
    assert local.stat().st_size > gcs_work.CHUNK_BYTES  # the upload really was several requests


def test_gcs_restarted_mid_upload_then_the_upload_starts_again_and_completes(gcs_proxied, server, tmp_path, lake):
    emulator, proxy, bucket = gcs_proxied
    _serve_month(server, tmp_path, "yellow", "2020-01", rows=BIG_MONTH)

    def restart() -> None:  # the emulator forgets its upload sessions, as a restarted server may
        emulator.stop()
        emulator.start()

    proxy.inject("PUT", CHUNK, "cut", before=restart)  # the first chunk's request dies with the server
    result, failures = run_tasks(UploadToGCS(service="yellow", month=month("2020-01")))
    assert failures == {} and result.status == luigi.LuigiStatusCode.SUCCESS
    assert [action for _, _, action in proxy.fired()] == ["cut"]
    sessions = [path for method, path, _ in proxy.seen if method == "POST" and "uploadType=resumable" in path]
    assert len(sessions) == 2  # the lost session was started again, once
    _whole_object(lake, bucket, "yellow", "2020-01")


def test_gcs_stopped_mid_upload_fails_cleanly_then_a_rerun_uploads_once(gcs_proxied, server, tmp_path, lake):
    emulator, proxy, bucket = gcs_proxied
    _serve_month(server, tmp_path, "yellow", "2020-01", rows=BIG_MONTH)
    proxy.inject("PUT", CHUNK, "cut", before=emulator.stop)  # and it stays down past the retry window
    task = UploadToGCS(service="yellow", month=month("2020-01"))
    result, failures = run_tasks(task)
    assert result.status == luigi.LuigiStatusCode.FAILED
    message = str(failures[task.task_id])
    local = lake / "yellow/2020/yellow_tripdata_2020-01.parquet"
    assert message.startswith(f"uploading {local} to gs://{bucket}/raw/yellow/2020/yellow_tripdata_2020-01.parquet: ")
    assert f"Timeout of {RETRY_SECONDS:.1f}s exceeded" in message
    assert "upload_id" not in message  # a resumable session's URL is a credential

    emulator.start()
    assert _objects(bucket) == {}  # nothing half uploaded is visible
    result, failures = run_tasks(UploadToGCS(service="yellow", month=month("2020-01")))
    assert failures == {}
    _whole_object(lake, bucket, "yellow", "2020-01")


@pytest.fixture
def bigquery_proxied(lake, gcs_bucket, bigquery_dataset, bigquery_server, bigquery_env, monkeypatch):
    """bqemulator behind a FaultProxy (GCS direct, so loads read the uploaded objects)."""
    with FaultProxy(bigquery_server.url, unique_jobs=True) as proxy:
        monkeypatch.setenv("BIGQUERY_EMULATOR_HOST", proxy.url)
        settings = {
            ("gcp", "project"): PROJECT,
            ("gcp", "bucket"): gcs_bucket,
            ("gcp", "dataset"): bigquery_dataset,
            ("gcp", "retry_seconds"): str(RETRY_SECONDS),
        }
        with luigi_settings(settings):
            yield proxy, bigquery_dataset


def _month_counts(bq_dataset: str) -> dict[str, int]:
    from luigi_tasks.catalog import YELLOW

    counts = bq_work.month_counts(bq_work.client(config.gcp()), bq_dataset, YELLOW)
    return {f"{at:%Y-%m}": rows for at, rows in counts.items()}


def _manifest_rows(lake, at: str) -> int:
    return read_manifest(lake / f"yellow/{at[:4]}/yellow_tripdata_{at}.parquet").rows_out


def _tables(bq_dataset: str) -> list[str]:
    bq = bq_work.client(config.gcp())
    return sorted(table.table_id for table in bq.list_tables(f"{bq.project}.{bq_dataset}"))


def test_bigquery_errors_are_retried_and_a_lost_job_answer_runs_the_job_once(bigquery_proxied, server, tmp_path, lake):
    proxy, bq_dataset = bigquery_proxied
    _serve_month(server, tmp_path, "yellow", "2020-01", rows=20_000)
    proxy.inject("POST", JOBS, "fail", status=503, times=2, body="sourceUris")  # the load job: refused twice
    proxy.inject("GET", r"/queries/luigi_tasks_", "fail", status=500)  # a poll of the transaction's result
    # The transaction's job is created, but its answer is lost: the client's retry meets its own job (409).
    proxy.inject("POST", JOBS, "lose_response", status=502, body="BEGIN TRANSACTION")

    result, failures = run_tasks(LoadToBigQuery(service="yellow", month=month("2020-01")))
    assert failures == {} and result.status == luigi.LuigiStatusCode.SUCCESS
    assert sorted(action for _, _, action in proxy.fired()) == ["duplicate", "fail", "fail", "fail", "lose_response"]
    assert any(method == "GET" and "/jobs/luigi_tasks_" in path for method, path, _ in proxy.seen)  # it awaited it
    assert _month_counts(bq_dataset) == {"2020-01": _manifest_rows(lake, "2020-01")}
    jobs = bq_work.client(config.gcp()).list_jobs()  # the emulator's jobs of every test: keep this dataset's
    replaces = [job.job_id for job in jobs if job.job_id.endswith("_replace") and bq_dataset in job.query]
    assert len(replaces) == 1  # the transaction ran once
    assert _tables(bq_dataset) == ["yellow_tripdata"]  # the staging table is gone


def test_bigquery_failing_past_the_retry_window_keeps_the_old_months_then_loads_exactly(
    bigquery_proxied, server, tmp_path, lake
):
    proxy, bq_dataset = bigquery_proxied
    for at in ("2020-01", "2020-02"):
        _serve_month(server, tmp_path, "yellow", at, rows=20_000)
    result, failures = run_tasks(LoadToBigQuery(service="yellow", month=month("2020-01")))
    assert failures == {}

    proxy.inject("POST", JOBS, "fail", status=503, times=1_000, body="BEGIN TRANSACTION")
    task = LoadToBigQuery(service="yellow", month=month("2020-02"))
    result, failures = run_tasks(task)
    assert result.status == luigi.LuigiStatusCode.FAILED
    message = str(failures[task.task_id])
    assert message.startswith(f"BigQuery, loading yellow 2020-02 into {PROJECT}.{bq_dataset}: ")
    assert f"Timeout of {RETRY_SECONDS:.1f}s exceeded" in message and "503" in message
    assert _month_counts(bq_dataset) == {"2020-01": _manifest_rows(lake, "2020-01")}  # January whole, no February
    assert _tables(bq_dataset) == ["yellow_tripdata"]  # the staging table was dropped on the way out

    proxy.clear()
    result, failures = run_tasks(LoadToBigQuery(service="yellow", month=month("2020-02")))
    assert failures == {}
    assert _month_counts(bq_dataset) == {at: _manifest_rows(lake, at) for at in ("2020-01", "2020-02")}
