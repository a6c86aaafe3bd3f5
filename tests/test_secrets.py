"""No secret in anything a run shows or keeps: logs, errors, the run history, webhooks, the lake's manifests.

A backfill into every sink runs with a PostgreSQL password in the DSN, cloud credentials in the
environment, a signed source URL and a webhook token; then a run fails in three ways (wrong password,
unpublished month, missing bucket). Everything they printed or wrote is searched for each secret.
"""

from __future__ import annotations

import gzip
import json
import os
import sqlite3
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from luigi_tasks.catalog import YELLOW
from luigi_tasks.synthetic import write_trip_csv
from tests.conftest import CSV_PATH, REPO, ZONES_PATH, command_env, month, month_path, pipeline_settings, write_config
from tests.conftest import DATA as TEST_DATA

SIGNATURE = "?X-Amz-Signature=url-signature-secret"
SECRETS = {
    "AWS_ACCESS_KEY_ID": "AKIASECRETKEYID00042",
    "AWS_SECRET_ACCESS_KEY": "aws-secret-access-key-secret",
    "AWS_SESSION_TOKEN": "aws-session-token-secret",
}
WEBHOOK_TOKEN = "hook-token-secret"
WRONG_PASSWORD = "wrong-password-secret"
GCP_PRIVATE_KEY = "gcp-private-key-secret"


class _Receiver(BaseHTTPRequestHandler):
    bodies: list[str] = []

    def do_POST(self) -> None:  # noqa: N802 - the http.server API
        _Receiver.bodies.append(self.rfile.read(int(self.headers["Content-Length"])).decode())
        self.send_response(200)
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


def _run(program: str, args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([str(REPO / "bin" / program), *args], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=300)  # fmt: skip


def _texts_under(root: Path) -> str:
    """Every file's bytes as text (replacement for binary), and every Parquet file's key-value metadata."""
    texts = []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        texts.append(path.read_bytes().decode("utf-8", "replace"))
        if path.suffix == ".parquet":
            texts.append(json.dumps({k.decode(): v.decode() for k, v in pq.read_metadata(path).metadata.items()}))
    return "\n".join(texts)


def test_no_secret_in_logs_errors_history_webhooks_or_the_lake(
    tmp_path, server, pg_dsn, gcs_bucket, bigquery_dataset, bigquery_env, s3_bucket, s3_env, monkeypatch
):
    password = os.environ.get("PGPASSWORD", "")
    if not password:
        pytest.skip("the test database has no password (LUIGI_TASKS_TEST_PG_DSN without PGPASSWORD)")
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    credentials = tmp_path / "service-account.json"
    credentials.write_text(json.dumps({"type": "service_account", "private_key": GCP_PRIVATE_KEY}))
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(credentials))
    monkeypatch.delenv("PGPASSWORD")  # the password is in the DSN only, as a user may have it

    for at in ("2020-01", "2020-02"):
        raw = write_trip_csv(tmp_path / f"yellow-{at}.csv", YELLOW, month(at), 5_000, seed=3)
        server.add(month_path(CSV_PATH, "yellow", at) + SIGNATURE, gzip.compress(raw.read_bytes()))
    server.add(ZONES_PATH + SIGNATURE, (TEST_DATA / "taxi_zone_lookup.csv").read_bytes(), content_type="text/csv")

    receiver = ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    _Receiver.bodies = []
    lake = tmp_path / "lake"
    settings = {
        **pipeline_settings(server, lake),
        ("tlc", "csv_url"): server.base_url + CSV_PATH + SIGNATURE,
        ("tlc", "zones_url"): server.base_url + ZONES_PATH + SIGNATURE,
        ("postgres", "dsn"): f"{pg_dsn} password={password}",
        ("notify", "webhook_url"): f"http://127.0.0.1:{receiver.server_address[1]}/hooks/{WEBHOOK_TOKEN}",
        ("gcp", "project"): "test-project",
        ("gcp", "bucket"): gcs_bucket,
        ("gcp", "dataset"): bigquery_dataset,
        ("gcp", "retry_seconds"): "3",
        ("s3", "bucket"): s3_bucket,
        ("core", "log_level"): "DEBUG",  # the most a user could turn on
    }
    env = command_env(write_config(tmp_path / "luigi.cfg", settings))
    runs = [_run("backfill", ["yellow", "2020-01", "2020-01", "--sinks", "lake,postgres,gcs,bigquery,s3"], env)]
    assert runs[0].returncode == 0, runs[0].stderr[-3000:]

    failing = {
        **settings,
        ("postgres", "dsn"): f"{pg_dsn} password={WRONG_PASSWORD}",
        ("gcp", "bucket"): "no-such-bucket",
    }
    env = command_env(write_config(tmp_path / "failing.cfg", failing))
    runs.append(_run("ingest-month", ["yellow", "2020-02", "--sinks", "postgres"], env))
    runs.append(_run("ingest-month", ["yellow", "2031-01"], env))
    runs.append(_run("ingest-month", ["yellow", "2020-01", "--sinks", "gcs"], env))
    runs.append(_run("luigi-run", ["--help"], env))
    history = subprocess.run(
        [sys.executable, "-m", "luigi_tasks.runs", "--limit", "100"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    receiver.shutdown()

    assert [run.returncode for run in runs[1:4]] == [35, 30, 35]  # 35: the check of a sink (complete()) failed
    # the failures are said, plainly
    assert "password authentication failed" in runs[1].stderr
    assert "yellow 2031-01 is not published at" in runs[2].stderr
    assert "GCS bucket no-such-bucket does not exist" in runs[3].stderr
    posted = sorted((body["task"], body["error"].split(":")[0]) for body in map(json.loads, _Receiver.bodies))
    assert posted == [  # one post per failure, from the task that failed
        ("DownloadTripData", "yellow 2031-01 is not published at http"),
        ("LoadToPostgres", "cannot tell whether it is done"),
        ("UploadToGCS", "cannot tell whether it is done"),
    ]

    everything = "\n".join(
        [run.stdout + run.stderr for run in runs]
        + [history.stdout, history.stderr]
        + _Receiver.bodies
        + [_texts_under(lake)]
        + [json.dumps(sqlite3.connect(tmp_path / "history.sqlite").execute("SELECT * FROM runs").fetchall())]
    )
    assert "yellow_tripdata_2020-01" in everything and "DEBUG" in everything  # the search reads real output
    secrets = [password, WRONG_PASSWORD, WEBHOOK_TOKEN, GCP_PRIVATE_KEY, "url-signature-secret", *SECRETS.values()]
    leaked = [secret for secret in secrets if secret in everything]
    assert leaked == []


def test_no_azure_key_or_sas_in_logs_errors_history_or_the_lake(
    tmp_path, server, azure_env, azure_client, azure_container, monkeypatch
):
    """An Azure lake and the azure mirror with DEBUG logs, then runs refused for a wrong key and a bad SAS."""
    from tests.conftest import serve_csv_month, serve_zones
    from tests.emulators import AZURITE_KEY

    serve_csv_month(server, "yellow", "2020-07", (TEST_DATA / "yellow_tripdata_2020-07_head266.csv").read_bytes())
    serve_zones(server)
    mirror = azure_client.create_container(f"{azure_container}-mirror").container_name
    settings = {
        **pipeline_settings(server, tmp_path / "unused"),
        ("lake", "root"): f"az://{azure_container}/lake",
        ("lake", "scratch"): str(tmp_path / "scratch"),
        ("azure", "container"): mirror,
        ("core", "log_level"): "DEBUG",
    }
    env = command_env(write_config(tmp_path / "luigi.cfg", settings))
    runs = [_run("ingest-month", ["yellow", "2020-07", "--sinks", "lake,azure"], env)]
    assert runs[0].returncode == 0, runs[0].stderr[-3000:]

    wrong_key = "d3Jvbmcta2V5LXNlY3JldA" + AZURITE_KEY[22:]  # base64, as a key is; not the account's
    sas = "sv=2023-11-03&ss=b&srt=sco&sp=rwl&se=2099-01-01T00:00:00Z&sig=sas-signature-secret"
    connection = azure_env.connection_string()
    for refused in (connection.replace(AZURITE_KEY, wrong_key),
                    connection.replace(f"AccountKey={AZURITE_KEY}", f"SharedAccessSignature={sas}")):  # fmt: skip
        runs.append(_run("ingest-month", ["yellow", "2020-08", "--sinks", "lake,azure"],
                         {**env, "AZURE_STORAGE_CONNECTION_STRING": refused}))  # fmt: skip
        assert runs[-1].returncode != 0
        assert "[lake] root az://" in runs[-1].stderr, runs[-1].stderr[-3000:]
    blobs = [azure_client.get_blob_client(azure_container, b.name).download_blob().readall().decode("utf-8", "replace")
             for b in azure_client.get_container_client(azure_container).list_blobs()]  # fmt: skip
    everything = "\n".join(
        [run.stdout + run.stderr for run in runs]
        + blobs
        + [json.dumps(sqlite3.connect(tmp_path / "history.sqlite").execute("SELECT * FROM runs").fetchall())]
    )
    assert "yellow_tripdata_2020-07" in everything and "DEBUG" in everything  # the search reads real output
    leaked = [secret for secret in (AZURITE_KEY, wrong_key, "sas-signature-secret") if secret in everything]
    assert leaked == []
