"""What a user sees on luigi's command line for their own mistakes: one line, no traceback, a documented exit code."""

from __future__ import annotations

import logging
import sys
import traceback
from pathlib import Path

import pytest

from luigi_tasks.cli import OneLineFailures
from luigi_tasks.errors import DataError
from tests.conftest import (
    DATA,
    REPO,
    luigi_command,
    pipeline_settings,
    serve_csv_month,
    serve_zones,
    write_config,
)

LUIGI = [str(Path(sys.executable).with_name("luigi")), "--module", "luigi_tasks"]
SINKS = "expected one or more of lake, postgres, duckdb, gcs, bigquery, s3, azure, separated by commas"


def error_lines(stderr: str) -> list[str]:
    """The ERROR lines, without the time luigi_tasks' logging puts before them."""
    return [line.split("ERROR: ", 1)[1] for line in stderr.splitlines() if "ERROR: " in line]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["IngestMonth", "--service", "yellow", "--month", "2021-1"],
         "--month '2021-1': expected YYYY-MM (e.g. 2021-01) or latest"),
        (["IngestMonth", "--service", "Yellow", "--month", "2021-01"],
         "--service 'Yellow': expected one of yellow, green, fhv, fhvhv"),
        (["IngestMonth", "--service", "yellow", "--month", "2021-01", "--sinks", "lake,"], f"--sinks 'lake,': {SINKS}"),
        (["IngestMonth", "--service", "yellow", "--month", "2021-01", "--sinks", "lake,warehouse"],
         f"--sinks 'lake,warehouse': {SINKS}"),
        (["IngestMonth", "--service", "yellow", "--month", "2021-01", "--IngestMonth-sinks", "pg"],
         f"--sinks 'pg': {SINKS}"),
        (["Backfill", "--services", "yellow,taxi", "--start", "2021-01", "--stop", "2021-02"],
         "--services 'yellow,taxi': expected all, or one or more of yellow, green, fhv, fhvhv, separated by commas"),
        (["Backfill", "--services", "yellow", "--start", "2021-05", "--stop", "2021-01"],
         "--stop '2021-01': expected --start 2021-05 or a later month"),
        (["IngestMonth", "--month", "2021-01"], "--service is missing: expected one of yellow, green, fhv, fhvhv"),
        (["ToParquet", "--service", "fhvhv", "--month", "2019-01"],
         "fhvhv 2019-01: the TLC publishes fhvhv from 2019-02 on, not before"),
    ],
)  # fmt: skip
def test_a_bad_parameter_is_one_line_naming_it_and_exits_40(tmp_path, server, args, message):
    config = write_config(tmp_path / "luigi.cfg", pipeline_settings(server, tmp_path / "lake"))
    done = luigi_command([*args, "--local-scheduler"], config)
    assert done.returncode == 40, done.stderr  # [retcode] unhandled_exception: bad parameters
    assert error_lines(done.stderr) == [message]
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "lake").exists()


@pytest.mark.parametrize(
    ("program", "args"),
    [
        ([str(REPO / "bin/ingest-month")], ["Yellow", "2021-01"]),
        ([str(REPO / "bin/backfill")], ["Yellow", "2021-01", "2021-02"]),
        ([sys.executable, "-m", "luigi", "--module", "luigi_tasks"],
         ["IngestMonth", "--service", "Yellow", "--month", "2021-01", "--local-scheduler"]),
    ],
)  # fmt: skip
def test_a_bad_parameter_is_one_line_under_every_way_to_run(tmp_path, server, program, args):
    config = write_config(tmp_path / "luigi.cfg", pipeline_settings(server, tmp_path / "lake"))
    done = luigi_command(args, config, program=program)
    assert done.returncode == 40, done.stderr
    [line] = error_lines(done.stderr)
    assert line.startswith(("--service 'Yellow': expected one of", "--services 'Yellow': expected all, or one"))
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(
    ("program", "task", "hint"),
    [
        (LUIGI, "IngestMonths", " (did you mean IngestMonth?)"),
        ([sys.executable, "-m", "luigi", "--module", "luigi_tasks"], "LoadToDuckdb", " (did you mean LoadToDuckDB?)"),
        (LUIGI, "Zzz", ""),
    ],
)  # fmt: skip
def test_an_unknown_task_is_one_line_naming_the_tasks_and_exits_40(tmp_path, server, program, task, hint):
    config = write_config(tmp_path / "luigi.cfg", pipeline_settings(server, tmp_path / "lake"))
    done = luigi_command([task, "--service", "yellow", "--local-scheduler"], config, program=program)
    assert done.returncode == 40, done.stderr
    assert done.stderr.strip().splitlines() == [
        f"no task named {task!r}{hint}; luigi_tasks' tasks are Backfill, BigQueryExternalTable, DownloadTripData,"
        " DownloadZones, IngestMonth, LoadToBigQuery, LoadToDuckDB, LoadToPostgres, LoadZonesToBigQuery,"
        " LoadZonesToDuckDB, LoadZonesToPostgres, ToParquet, TransferS3ToGCS, UploadToAzure, UploadToGCS, UploadToS3,"
        " UploadZonesToAzure, UploadZonesToGCS, UploadZonesToS3, ZonesToParquet"
    ]
    assert not (tmp_path / "lake").exists()


def test_an_unreachable_sink_in_a_done_check_is_one_line(tmp_path, server):
    settings = {
        **pipeline_settings(server, tmp_path / "lake"),
        ("postgres", "dsn"): "postgresql://luigi@127.0.0.1:1/db",
    }
    args = ["IngestMonth", "--service", "yellow", "--month", "2020-07", "--sinks", "postgres", "--local-scheduler"]
    done = luigi_command(args, write_config(tmp_path / "luigi.cfg", settings))
    assert done.returncode == 35, done.stderr  # [retcode] scheduling_error
    [line] = [line for line in done.stderr.splitlines() if "Will not run" in line]
    assert "due to error in complete() method: cannot connect to PostgreSQL at luigi@127.0.0.1:1/db: " in line
    assert "Traceback" not in done.stderr


def complete_error_record(error: Exception) -> logging.LogRecord:
    """luigi's worker record of a complete() that raised: the traceback as text (it may come from another process)."""
    try:
        raise error
    except Exception:
        trace = traceback.format_exc()
    head = "Will not run ToParquet(service=yellow, month=2021-01) or any dependencies due to error in complete() method"
    message = f"{head}:\n{trace}"
    return logging.LogRecord("luigi-interface", logging.WARNING, __file__, 1, message, None, None)


def test_a_done_check_failing_with_our_error_is_one_line_and_a_bug_keeps_its_traceback():
    ours = complete_error_record(DataError("[lake] root /x: is a file; expected a directory"))
    assert OneLineFailures().filter(ours)
    assert ours.getMessage() == (
        "Will not run ToParquet(service=yellow, month=2021-01) or any dependencies due to error in complete() method:"
        " [lake] root /x: is a file; expected a directory"
    )
    bug = complete_error_record(KeyError("row_group_rows"))
    text = bug.getMessage()
    assert OneLineFailures().filter(bug)
    assert bug.getMessage() == text and "Traceback (most recent call last)" in text


@pytest.mark.parametrize("level", ["INFO", "DEBUG"])  # INFO: the shipped logging.cfg; DEBUG: luigi's own setup
def test_a_module_logger_info_line_shows_at_any_log_level(tmp_path, server, s3_env, s3_client, s3_bucket, level):
    """luigi sets up its own "luigi-interface" logger only; luigi_tasks.s3 logs to its own name."""
    serve_csv_month(server, "yellow", "2020-07", (DATA / "yellow_tripdata_2020-07_head266.csv").read_bytes())
    serve_zones(server)
    key = "raw/yellow/2020/yellow_tripdata_2020-07.parquet"
    s3_client.create_multipart_upload(Bucket=s3_bucket, Key=key)  # as a run killed mid-upload leaves it
    settings = {**pipeline_settings(server, tmp_path / "lake"), ("s3", "bucket"): s3_bucket}
    args = ["IngestMonth", "--service", "yellow", "--month", "2020-07", "--sinks", "s3", "--local-scheduler"]
    done = luigi_command([*args, "--log-level", level], write_config(tmp_path / "luigi.cfg", settings))
    assert done.returncode == 0, done.stderr
    line = f"INFO: s3://{s3_bucket}/{key}: aborted 1 unfinished multipart upload(s)"
    assert [shown for shown in done.stderr.splitlines() if shown.endswith(line)], done.stderr


def test_the_exit_codes_apply_with_a_config_of_ones_own_outside_the_repo(tmp_path, server):
    """luigi alone exits 0 on failure; a user's config file need not set [retcode]."""
    root = tmp_path / "lake"
    settings = {key: value for key, value in pipeline_settings(server, root).items() if key[0] in ("tlc", "lake")}
    config = write_config(tmp_path / "mine.cfg", settings)
    assert "[retcode]" not in config.read_text()
    missing = ["IngestMonth", "--service", "yellow", "--month", "2031-01", "--local-scheduler"]
    failed = luigi_command(missing, config, cwd=tmp_path)
    assert failed.returncode == 30, failed.stderr  # task_failed
    assert "yellow 2031-01 is not published at" in failed.stderr
    bad = luigi_command(["IngestMonth", "--service", "yellow", "--month", "2031-1", "--local-scheduler"], config,
                        cwd=tmp_path)  # fmt: skip
    assert bad.returncode == 40, bad.stderr  # unhandled_exception: bad parameters
    script = luigi_command(["yellow", "2031-01"], config, program=[str(REPO / "bin/ingest-month")], cwd=tmp_path)
    assert script.returncode == 30, script.stderr
    own = write_config(tmp_path / "own.cfg", {**settings, ("retcode", "task_failed"): "7"})
    assert luigi_command(missing, own, cwd=tmp_path).returncode == 7  # a config's own code wins
