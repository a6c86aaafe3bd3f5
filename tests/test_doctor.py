"""bin/doctor against real parts: the local source server, PostgreSQL, the GCS/BigQuery/S3 emulators, luigid.

A good setup passes with exit 0; each broken one gives its FAIL line (exactly) and a non-zero exit.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg2
import pytest

from luigi_tasks import ToParquet, doctor
from luigi_tasks.postgres import describe_dsn
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
from tests.emulators import PROJECT, fresh_name
from tests.postgres_cluster import free_port
from tests.test_duckdb import (
    COURSE_NAME_RULE,
    PYTHON,
    holder,  # noqa: F401 - the fixture
)
from tests.test_remote_lake import remote_lake  # noqa: F401, F811 - the fixture
from tests.test_scheduler import luigid  # noqa: F401 - the fixture

YELLOW_HEAD = (DATA / "yellow_tripdata_2020-07_head266.csv").read_bytes()
GREEN_HEAD = (DATA / "green_tripdata_2019-01_head99.csv").read_bytes()
SECRET = "doctor-url-signature-secret"


def doctor_lines(capsys, *args: str) -> tuple[int, list[str]]:
    """The exit code and the lines of `python -m luigi_tasks.doctor ARGS`, run in this process."""
    code = doctor.main(list(args))
    return code, capsys.readouterr().out.splitlines()


def heads(lines: list[str]) -> list[str]:
    """Each line up to its colon: the status and what was checked."""
    return [line.split(": ", 1)[0] for line in lines]


@pytest.fixture
def source(lake, server):
    """The lake fixture with yellow and green 2019-01 and the zone lookup on the source server."""
    serve_csv_month(server, "yellow", "2019-01", YELLOW_HEAD)
    serve_csv_month(server, "green", "2019-01", GREEN_HEAD)
    serve_zones(server)
    return lake


@pytest.fixture
def everything(source, server, pg_dsn, gcs_bucket, bigquery_dataset, bigquery_env, s3_bucket, s3_env):
    """Every sink configured against its real service: PostgreSQL, fake-gcs-server, bqemulator, moto."""
    settings = {
        ("postgres", "dsn"): pg_dsn,
        ("gcp", "project"): PROJECT,
        ("gcp", "bucket"): gcs_bucket,
        ("gcp", "dataset"): bigquery_dataset,
        ("s3", "bucket"): s3_bucket,
    }
    with luigi_settings(settings):
        yield {**pipeline_settings(server, source), **settings}


def test_a_good_setup_passes_through_bin_doctor(everything, tmp_path, pg_dsn, gcs_bucket, bigquery_dataset, s3_bucket):
    config = write_config(tmp_path / "luigi.cfg", everything)
    run = subprocess.run(
        [str(REPO / "bin/doctor"), "yellow,green", "2019-01", "2019-02", "--sinks", "lake,postgres,gcs,bigquery,s3"],
        cwd=tmp_path, env=command_env(config), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    lines = run.stdout.splitlines()
    lake = everything[("lake", "root")]
    base = everything[("tlc", "csv_url")].split("/csv/")[0]
    assert (run.returncode, run.stderr) == (0, ""), run.stdout
    assert heads(lines) == [
        "ok   config",
        "ok   source yellow 2019-01",
        "ok   source green 2019-01",
        "ok   source zone lookup",
        f"ok   lake {lake}",
        f"ok   scratch {Path(tempfile.gettempdir()) / 'luigi_tasks'}",
        f"ok   run history {everything[('history', 'path')]}",
        f"ok   disk for 4 months in {lake}",
        f"ok   postgres {describe_dsn(pg_dsn)}",
        "ok   google credentials",
        f"ok   gcs bucket {gcs_bucket}",
        "ok   google credentials",
        f"ok   bigquery dataset {PROJECT}.{bigquery_dataset}",
        f"ok   bigquery dataset {PROJECT}.{bigquery_dataset} and gcs bucket {gcs_bucket}",
        "ok   aws credentials",
        f"ok   s3 bucket {s3_bucket}",
        "ok   scheduler",
    ]
    assert lines[0] == f"ok   config: every section is valid ({config})"
    assert lines[1] == f"ok   source yellow 2019-01: {base}/csv/yellow/yellow_tripdata_2019-01.csv.gz answers"
    assert lines[8].endswith(": connects; marker table table_updates can be created and read (0 loads marked)")
    assert lines[12] == f"ok   bigquery dataset {PROJECT}.{bigquery_dataset}: exists, location US"
    assert lines[10] == f"ok   gcs bucket {gcs_bucket}: exists, location US-CENTRAL1"
    assert not Path(lake).exists()  # the probe and the folders made for it are gone
    # The check leaves the database as it was: the marker table was made in a transaction rolled back.
    with contextlib.closing(psycopg2.connect(pg_dsn)) as conn, conn.cursor() as cur:
        cur.execute("SELECT to_regclass('table_updates')")
        assert cur.fetchone() == (None,)


def test_an_unresolvable_source_host_fails_naming_the_host_and_the_setting(source, capsys):
    url = "http://nonexistent.invalid/csv/{service}/{service}_tripdata_{year}-{month}.csv.gz"
    with luigi_settings({("tlc", "csv_url"): f"{url}?X-Amz-Signature={SECRET}"}):
        code, lines = doctor_lines(capsys, "yellow", "2019-01", "2019-03")
    assert code == 1
    assert (
        "FAIL source yellow 2019-01: cannot reach http://nonexistent.invalid/csv/yellow/yellow_tripdata_2019-01.csv.gz:"
        " the host name does not resolve (check [tlc] csv_url, the network and DNS)"
    ) in lines
    assert SECRET not in "\n".join(lines)


def test_a_refused_connection_fails_and_a_month_not_published_is_a_warning(source, server, capsys):
    port = free_port()
    closed = f"http://127.0.0.1:{port}/trip-data/{{service}}_tripdata_{{year}}-{{month}}.parquet"
    with luigi_settings({("tlc", "source"): "auto", ("tlc", "parquet_url"): closed}):
        code, lines = doctor_lines(capsys, "yellow,green", "2021-07", "2021-08")
    assert code == 1
    base = server.base_url
    assert (
        f"warn source yellow 2021-07: not published at {base}/csv/yellow/yellow_tripdata_2021-07.csv.gz (HTTP 404)"
        ": that month will fail"
    ) in lines
    assert (
        f"FAIL source green 2021-08: cannot reach http://127.0.0.1:{port}/trip-data/green_tripdata_2021-08.parquet"
        ": connection refused (check [tlc] parquet_url, the network and DNS)"
    ) in lines

    code, lines = doctor_lines(capsys, "yellow", "2021-07", "2021-07")
    assert code == 0  # a month that is not there is a warning only
    assert [line for line in lines if not line.startswith("ok")] == [
        f"warn source yellow 2021-07: not published at {base}/csv/yellow/yellow_tripdata_2021-07.csv.gz (HTTP 404)"
        ": that month will fail"
    ]


def test_a_wrong_postgres_password_fails_without_showing_it(source, pg_dsn, monkeypatch, capsys):
    wrong = "wrong-doctor-password"
    monkeypatch.delenv("PGPASSWORD", raising=False)
    with luigi_settings({("postgres", "dsn"): f"{pg_dsn} password={wrong}"}):
        code, lines = doctor_lines(capsys, "yellow", "2019-01", "2019-01", "--sinks", "lake,postgres")
    assert code == 1
    parts = dict(item.split("=") for item in pg_dsn.split())
    assert lines[-2] == (
        f"FAIL postgres: cannot connect to PostgreSQL at {describe_dsn(pg_dsn)}: connection to server at"
        f' "127.0.0.1", port {parts["port"]} failed: FATAL: password authentication failed for user "{parts["user"]}"'
        " (check [postgres] dsn, and PGPASSWORD or ~/.pgpass for the password)"
    )
    assert wrong not in "\n".join(lines)


def test_a_missing_bucket_dataset_or_s3_bucket_is_named(source, gcs_bucket, bigquery_env, s3_env, capsys):
    settings = {
        ("gcp", "project"): PROJECT,
        ("gcp", "bucket"): "no-such-doctor-bucket",
        ("gcp", "dataset"): "no_such_dataset",
        ("s3", "bucket"): "no-such-doctor-bucket",
    }
    with luigi_settings(settings):
        code, lines = doctor_lines(capsys, "yellow", "2019-01", "2019-01", "--sinks", "gcs,bigquery,s3")
    assert code == 1
    failures = [line for line in lines if line.startswith("FAIL")]
    assert failures == [
        "FAIL gcs: GCS bucket no-such-doctor-bucket does not exist (or this account cannot see it): create it first",
        f"FAIL bigquery dataset {PROJECT}.no_such_dataset: does not exist: create it first",
        "FAIL s3: S3 bucket no-such-doctor-bucket does not exist (or this account cannot see it)",
    ]


def test_the_azure_sink_names_its_credentials_source_and_a_missing_container(source, azure_container, monkeypatch,
                                                                             capsys):  # fmt: skip
    with luigi_settings({("azure", "container"): azure_container}):
        code, lines = doctor_lines(capsys, "yellow", "2019-01", "2019-01", "--sinks", "azure")
    assert code == 0, lines
    assert "ok   azure credentials: account devstoreaccount1, from AZURE_STORAGE_CONNECTION_STRING" in lines
    assert f"ok   azure container {azure_container}: exists" in lines
    with luigi_settings({("azure", "container"): "no-such-doctor-container"}):
        code, lines = doctor_lines(capsys, "yellow", "2019-01", "2019-01", "--sinks", "azure")
    assert code == 1
    assert [line for line in lines if line.startswith("FAIL")] == [
        "FAIL azure: Azure container no-such-doctor-container does not exist (or this account cannot see it): "
        "create it first"
    ]
    monkeypatch.delenv("AZURE_STORAGE_CONNECTION_STRING")
    code, lines = doctor_lines(capsys, "yellow", "2019-01", "2019-01", "--sinks", "azure")
    assert code == 1
    assert [line for line in lines if line.startswith("FAIL")] == [
        "FAIL azure credentials: no Azure storage account: set AZURE_STORAGE_ACCOUNT_NAME (or "
        "AZURE_STORAGE_CONNECTION_STRING), [azure] account, or name it in the root as "
        "abfss://container@ACCOUNT.dfs.core.windows.net/prefix"
    ]
    assert "AccountKey" not in "\n".join(lines)


@pytest.fixture
def eu_dataset(bigquery_client) -> Iterator[str]:
    """A dataset in the EU location (bqemulator keeps the location it is given)."""
    from google.cloud import bigquery

    dataset = bigquery.Dataset(f"{PROJECT}.{fresh_name('eu')}")
    dataset.location = "EU"
    created = bigquery_client.create_dataset(dataset)
    yield created.dataset_id
    bigquery_client.delete_dataset(created, not_found_ok=True)


def test_a_dataset_in_another_location_than_the_bucket_fails(source, gcs_bucket, eu_dataset, capsys):
    # fake-gcs-server puts every bucket in US-CENTRAL1, whatever location it is created with.
    settings = {("gcp", "project"): PROJECT, ("gcp", "bucket"): gcs_bucket, ("gcp", "dataset"): eu_dataset}
    with luigi_settings({**settings, ("gcp", "location"): "US"}):
        code, lines = doctor_lines(capsys, "yellow", "2019-01", "2019-01", "--sinks", "bigquery")
    assert code == 1
    dataset = f"bigquery dataset {PROJECT}.{eu_dataset}"
    assert [line for line in lines if line.startswith("FAIL")] == [
        f"FAIL {dataset}: is in EU, [gcp] location is US: set it to match",
        f"FAIL {dataset} and gcs bucket {gcs_bucket}: the dataset is in EU, the bucket in US-CENTRAL1: a load from"
        " GCS needs both in one location (or the dataset in US); use a bucket in the dataset's location",
    ]


def test_which_locations_can_load_from_which():
    assert doctor.location_problem("US", "US-CENTRAL1") is None  # a US dataset loads from a bucket anywhere
    assert doctor.location_problem("US", "ASIA-NORTHEAST1") is None
    assert doctor.location_problem("asia-northeast1", "ASIA-NORTHEAST1") is None
    assert doctor.location_problem("EU", "EUROPE-WEST1") is None
    assert doctor.location_problem("asia-northeast1", "ASIA") is not None  # a region does not take a multi-region
    assert doctor.location_problem("EU", "US") is not None


def test_missing_cloud_credentials_are_said(source, monkeypatch, tmp_path, capsys):
    for name in ("STORAGE_EMULATOR_HOST", "BIGQUERY_EMULATOR_HOST", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
                 "AWS_PROFILE", "AWS_SESSION_TOKEN"):  # fmt: skip
        monkeypatch.delenv(name, raising=False)
    key_file = tmp_path / "absent-key.json"
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(key_file))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "aws-config-absent"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "aws-credentials-absent"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # no instance role to ask for
    with luigi_settings({("gcp", "bucket"): "some-bucket", ("s3", "bucket"): "some-bucket"}):
        code, lines = doctor_lines(capsys, "yellow", "2019-01", "2019-01", "--sinks", "gcs,s3")
    assert code == 1
    assert [line for line in lines if line.startswith("FAIL")] == [
        f"FAIL google credentials: none found (File {key_file} was not found): set GOOGLE_APPLICATION_CREDENTIALS"
        " to a service account's key file, or run `gcloud auth application-default login`",
        "FAIL aws credentials: none found: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE with"
        " ~/.aws/credentials, or run with an instance role",
    ]


@contextlib.contextmanager
def read_only(folder: Path) -> Iterator[str]:
    """The folder made read-only for this process: a read-only bind mount as root (who ignores modes), else 0555."""
    folder.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        folder.chmod(0o555)
        try:
            yield "Permission denied"
        finally:
            folder.chmod(0o755)
        return
    mounted = subprocess.run(["mount", "--bind", "-o", "ro", str(folder), str(folder)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot make a read-only folder as root here: {mounted.stderr.decode().strip()}")
    try:
        yield "Read-only file system"
    finally:
        subprocess.run(["umount", str(folder)], check=True)


def test_a_read_only_lake_fails(source, capsys):
    history = source / "state/history.sqlite"
    with read_only(source) as reason, luigi_settings({("history", "path"): str(history)}):
        code, lines = doctor_lines(capsys, "yellow", "2019-01", "2019-01")
    assert code == 1
    assert (
        f"FAIL lake: [lake] root {source}: cannot write in {source}: {reason}; expected a directory this user can write"
        in lines
    )
    assert (
        f"FAIL run history {history}: cannot write in it: {reason} (make it writable, or set [history] path)"
    ) in lines
    assert list(source.iterdir()) == []


def test_too_little_disk_for_the_range_fails_and_little_to_spare_warns(source):
    # The decision, on this disk's real free space, with month sizes given instead of the estimate. Other
    # processes write to the disk meanwhile: the sizes keep clear of the thresholds, the free figure is matched loosely.
    free = shutil.disk_usage(source.parent).free
    months = [month("2019-01"), month("2019-02")]
    nothing_done = lambda name, months: set()  # noqa: E731
    short = doctor.check_disk(["yellow"], months, lambda name, m: (free // 2, free // 2), nothing_done)
    assert len(short) == 1
    needed = re.escape(doctor._size(free // 2 * 4))
    assert re.fullmatch(
        rf"FAIL disk for 2 months in {re.escape(str(source))}: needs ~{needed} \(a rough"
        r" estimate from typical month sizes\), [\d,.]+ GB free: free some space, back up fewer months, or move"
        r" \[lake\] root",
        short[0].line,
    ), short[0].line
    tight = doctor.check_disk(["yellow"], months, lambda name, m: (free // 6, free // 6), nothing_done)
    assert [c.status for c in tight] == ["warn"]
    assert tight[0].line.endswith("GB free: tight, the estimate is rough")
    ample = doctor.check_disk(["yellow"], months, lambda name, m: (1000, 1000), nothing_done)
    assert [c.status for c in ample] == ["ok"]


def test_a_lake_on_a_small_filesystem_fails_with_the_estimate(source, capsys):
    """A real 8 MiB tmpfs as the lake: the default estimate of a yellow month does not fit."""
    source.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(source)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        free = shutil.disk_usage(source).free
        code, lines = doctor_lines(capsys, "yellow", "2019-01", "2019-01")
    finally:
        subprocess.run(["umount", str(source)], check=True)
    raw, parquet = doctor.month_bytes("yellow", month("2019-01"))
    assert code == 1
    assert (
        f"FAIL disk for 1 month in {source}: needs ~{doctor._size(raw + parquet)} (a rough estimate from typical"
        f" month sizes), {doctor._size(free)} free: free some space, back up fewer months, or move [lake] root"
    ) in lines


def test_months_already_in_the_lake_need_no_space(source):
    result, failures = run_tasks(ToParquet(service="yellow", month=month("2019-01")))
    assert failures == {}
    checks = doctor.check_disk(["yellow"], [month("2019-01"), month("2019-02")], lambda name, m: (10, 10))
    assert [c.what for c in checks] == [f"disk for 1 month in {source}"]


def test_an_invalid_setting_is_one_fail_line(source, capsys):
    with luigi_settings({("tlc", "retries"): "-1"}):
        code, lines = doctor_lines(capsys, "yellow", "2019-01", "2019-01")
    assert code == 1
    assert lines[0] == "FAIL config [tlc]: [tlc] retries -1 is out of range: expected 0 or more retries"


def test_a_config_path_that_is_not_a_file_fails(source, monkeypatch, tmp_path):
    missing = tmp_path / "luigi.cfg"
    monkeypatch.setenv("LUIGI_CONFIG_PATH", str(missing))
    assert [c.line for c in doctor.check_config()] == [
        f"FAIL config: LUIGI_CONFIG_PATH {missing} is not a file: point it at your luigi.cfg"
    ]


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (
            ["purple", "2019-01", "2019-02"],
            "SERVICES 'purple': expected all, or one or more of yellow, green, fhv, fhvhv, separated by commas",
        ),
        (["yellow", "2019-13", "2019-02"], "START '2019-13': expected YYYY-MM (e.g. 2021-01) or latest"),
        (["yellow", "2019-05", "2019-02"], "STOP 2019-02 is before START 2019-05"),
        (["yellow", "2019-01", "2019-02", "--sinks", "lake,ftp"], "--sinks 'lake,ftp': expected one or more of "),
    ],
)
def test_a_bad_command_line_is_one_error_line(args, error, capsys):
    with pytest.raises(SystemExit) as exit_:
        doctor.main(args)
    assert exit_.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1].startswith(f"doctor: error: {error}")


def test_luigid_is_checked_when_the_run_would_use_it(source, luigid, capsys):  # noqa: F811 - the fixture
    port = luigid
    code, lines = doctor_lines(capsys, "yellow", "2019-01", "2019-01", "--scheduler-host", "127.0.0.1",
                               "--scheduler-port", str(port))  # fmt: skip
    assert (code, lines[-1]) == (0, f"ok   luigid http://127.0.0.1:{port}: accepts connections")
    closed = free_port()
    code, lines = doctor_lines(capsys, "yellow", "2019-01", "2019-01", "--scheduler-url", f"http://127.0.0.1:{closed}/")
    assert (code, lines[-1]) == (
        1,
        f"FAIL luigid: cannot reach the central scheduler at http://127.0.0.1:{closed}: connection refused"
        " (start it with bin/luigid, or run with --local-scheduler)",
    )


def test_a_lake_on_object_storage_is_probed_and_left_as_it_was(source, remote_lake, capsys):  # noqa: F811
    with luigi_settings({("lake", "root"): remote_lake.root}):
        code, lines = doctor_lines(capsys, "yellow", "2019-01", "2019-01")
    assert code == 0, lines
    assert (
        f"ok   lake {remote_lake.root}: reachable and writable (a probe file was written, read back and deleted)"
        in lines
    )
    scratch = Path(tempfile.gettempdir()) / "luigi_tasks"
    assert any(line.startswith(f"ok   disk for scratch {scratch}: needs ~") for line in lines)
    # Nothing is left but, on S3, the zero-byte "lake/" marker pyarrow keeps when it empties a "directory".
    assert remote_lake.keys() == ([""] if remote_lake.kind == "s3" else [])

    scheme = remote_lake.root.split("://")[0]
    noun = "container" if remote_lake.kind == "azure" else "bucket"
    with luigi_settings({("lake", "root"): f"{scheme}://no-such-doctor-bucket/lake"}):
        code, lines = doctor_lines(capsys, "yellow", "2019-01", "2019-01")
    assert code == 1
    assert (
        f"FAIL lake: [lake] root {scheme}://no-such-doctor-bucket/lake: {noun} no-such-doctor-bucket does not exist"
        " (or cannot be seen)"
    ) in lines


def test_a_cloud_endpoint_that_does_not_answer_fails_within_the_doctors_patience(source, monkeypatch, capsys):
    # A run retries [gcp] retry_seconds (300 s by default); the doctor gives up after PATIENCE seconds.
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", f"http://127.0.0.1:{free_port()}")
    with luigi_settings({("gcp", "bucket"): "doctor-bucket"}):
        code, lines = doctor_lines(capsys, "yellow", "2019-01", "2019-01", "--sinks", "gcs")
    assert code == 1
    [failure] = [line for line in lines if line.startswith("FAIL")]
    assert failure.startswith(f"FAIL gcs: GCS bucket doctor-bucket: Timeout of {doctor.PATIENCE:.1f}s exceeded")
    assert "Connection refused" in failure


def test_the_duckdb_file_is_checked_before_and_while_another_process_holds_it(source, holder, capsys):  # noqa: F811
    path = source.parent / "taxi_rides_ny.duckdb"  # the default: beside the lake
    code, lines = doctor_lines(capsys, "yellow", "2019-01", "2019-01", "--sinks", "lake,duckdb")
    assert code == 0
    assert f"ok   duckdb {path}: not there yet: the first load creates it" in lines
    assert not path.exists()

    child = holder(path)
    code, lines = doctor_lines(capsys, "yellow", "2019-01", "2019-01", "--sinks", "lake,duckdb")
    assert code == 1
    assert (
        f"FAIL duckdb {path}: DuckDB file {path} is held open by another process ({PYTHON}, PID {child.pid}) for"
        " more than [duckdb] lock_wait = 0 seconds; close it there (DuckDB lets one process at a time use a file it"
        " writes) or raise lock_wait"
    ) in lines

    child.kill()
    child.wait()
    code, lines = doctor_lines(capsys, "yellow", "2019-01", "2019-01", "--sinks", "lake,duckdb")
    assert code == 0 and f"ok   duckdb {path}: opens; 0 tables in schema prod" in lines


def test_a_duckdb_file_the_courses_dbt_sources_cannot_name_is_a_warning(source, tmp_path, capsys):
    path = tmp_path / "trips.v2.duckdb"  # DuckDB names it database trips: the name up to the first dot
    with luigi_settings({("duckdb", "path"): str(path)}):
        code, lines = doctor_lines(capsys, "yellow", "2019-01", "2019-01", "--sinks", "lake,duckdb")
    assert code == 0
    assert f"warn duckdb {path}: {COURSE_NAME_RULE.format(database='trips')}" in lines
    with luigi_settings({("duckdb", "path"): str(tmp_path / "taxi_rides_ny.duckdb")}):
        code, lines = doctor_lines(capsys, "yellow", "2019-01", "2019-01", "--sinks", "lake,duckdb")
    assert code == 0 and not [line for line in lines if line.startswith("warn duckdb")]
