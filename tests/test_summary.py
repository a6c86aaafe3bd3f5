"""What a person running the command line sees: the table of months at the end, one line per failure,
the time on every log line, and one line at once when the central scheduler is not there."""

from __future__ import annotations

import re
import subprocess
import time

from tests.conftest import (
    DATA,
    REPO,
    command_env,
    luigi_command,
    pipeline_settings,
    serve_csv_month,
    serve_zones,
    write_config,
)
from tests.postgres_cluster import free_port
from tests.test_scheduler import luigid  # noqa: F401 - the real luigid fixture

GREEN_HEAD = (DATA / "green_tripdata_2019-01_head99.csv").read_bytes()
BACKFILL = [str(REPO / "bin/backfill")]
INGEST_MONTH = [str(REPO / "bin/ingest-month")]
TITLE = "===== luigi_tasks: months in this run ====="
LOG_RECORD = re.compile(r"^(\S+ \S+ )?(DEBUG|INFO|WARNING|ERROR|CRITICAL): ")  # with or without the time
LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d (DEBUG|INFO|WARNING|ERROR|CRITICAL): ")


def summary_of(output: str) -> list[str]:
    """The lines of the luigi_tasks table, without the log prefix of its first line."""
    assert TITLE in output, output
    lines = output.split(TITLE, 1)[1].splitlines()[1:]
    return [line for line in lines if line and not LOG_LINE.match(line)]


def row(lines: list[str], service: str, month: str) -> list[str]:
    """The month's line split into columns, followed by its `failed:` lines."""
    at = next(i for i, line in enumerate(lines) if line.split()[:2] == [service, month])
    failures = []
    for line in lines[at + 1 :]:
        if not line.startswith("    failed: "):
            break
        failures.append(line.removeprefix("    failed: "))
    return [*re.split(r"\s{2,}", lines[at].strip()), *failures]


def mixed_source(server, tmp_path) -> tuple:
    """Green 2019-09..2019-12: 2019-10 fine, 2019-11 downloads but has a ragged row, the others are 404."""
    serve_csv_month(server, "green", "2019-10", GREEN_HEAD)
    lines = GREEN_HEAD.split(b"\n")
    lines[5] = b",".join(lines[5].split(b",")[:4])
    serve_csv_month(server, "green", "2019-11", b"\n".join(lines))
    serve_zones(server)
    return write_config(tmp_path / "luigi.cfg", pipeline_settings(server, tmp_path / "lake"))


def assert_mixed_summary(output: str, source: str) -> None:
    lines = summary_of(output)
    assert lines[0].split() == ["service", "month", "result", "ran", "rows", "in", "sinks"]
    nov = row(lines, "green", "2019-11")
    assert nov[2:5] == ["FAILED", "DownloadTripData", "-"]
    [cause] = nov[5:]
    assert cause.startswith("ToParquet: green 2019-11 (") and "line 6" in cause, cause
    for month in ("2019-09", "2019-12"):
        assert row(lines, "green", month)[2:] == [
            "FAILED",
            "-",
            "-",
            f"DownloadTripData: green {month} is not published at {source}/csv/green/green_tripdata_{month}.csv.gz"
            " (HTTP 404)",
        ]
    assert row(lines, "green", "2019-10")[2:] == ["done", "DownloadTripData, ToParquet, IngestMonth", "lake 99"]
    assert row(lines, "-", "-")[2:] == ["done", "DownloadZones, ZonesToParquet", "lake 265"]
    assert lines[-1].startswith("4 months: ")
    assert sorted(lines[-1].removeprefix("4 months: ").split(", ")) == ["1 done", "3 FAILED"]


def test_backfill_with_mixed_months_names_each_failure_and_the_rows(tmp_path, server):
    config = mixed_source(server, tmp_path)
    done = luigi_command(["green", "2019-09", "2019-12"], config, program=BACKFILL)
    assert done.returncode == 30, done.stderr  # [retcode] task_failed
    assert_mixed_summary(done.stderr, server.base_url)
    assert "Traceback" not in done.stderr
    failed = [line for line in done.stderr.splitlines() if " ERROR: " in line]
    assert len(failed) == 3 and all(" failed    " in line for line in failed)  # one line per failure
    assert any(
        line.endswith("(HTTP 404)") and "DownloadTripData(service=green, month=2019-12)" in line for line in failed
    )


def test_the_table_has_what_forked_workers_ran(tmp_path, server):
    config = mixed_source(server, tmp_path)
    spool_dir = tmp_path / "tmp"
    spool_dir.mkdir()
    done = subprocess.run(
        [*BACKFILL, "green", "2019-09", "2019-12", "--workers", "2"],
        env={**command_env(config), "TMPDIR": str(spool_dir)},
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 30, done.stderr
    assert_mixed_summary(done.stderr, server.base_url)
    assert "Traceback" not in done.stderr
    assert list(spool_dir.glob("luigi_tasks-run-*")) == []  # the events file is removed at the end


def test_the_table_under_luigid(tmp_path, server, luigid):  # noqa: F811 - the fixture imported above
    config = mixed_source(server, tmp_path)
    args = ["green", "2019-09", "2019-12", "--scheduler-host", "127.0.0.1", "--scheduler-port", str(luigid)]
    done = luigi_command(args, config, program=BACKFILL)
    assert done.returncode == 30, done.stderr
    assert_mixed_summary(done.stderr, server.base_url)


def test_log_lines_carry_the_time_and_a_rerun_shows_the_rows_done_before(tmp_path, server):
    config = mixed_source(server, tmp_path)
    first = luigi_command(["green", "2019-10"], config, program=INGEST_MONTH)
    assert first.returncode == 0, first.stderr
    records = [line for line in first.stderr.splitlines() if LOG_RECORD.match(line)]
    assert len(records) > 10 and all(LOG_LINE.match(line) for line in records), first.stderr
    assert any(line.endswith(" INFO: green 2019-10: lake 99 rows") for line in records)  # our own messages show

    again = luigi_command(["green", "2019-10"], config, program=INGEST_MONTH)
    assert again.returncode == 0, again.stderr
    assert row(summary_of(again.stderr), "green", "2019-10")[2:] == ["done before", "-", "lake 99"]


def test_an_unreachable_scheduler_stops_the_run_at_once_in_one_line(tmp_path, server):
    config = mixed_source(server, tmp_path)
    port = free_port()  # nothing listens there
    line = (
        f"cannot reach the central scheduler at http://127.0.0.1:{port}: connection refused"
        " (start it with bin/luigid, or run with --local-scheduler)"
    )
    for program, args in [
        (BACKFILL, ["green", "2019-10", "2019-10"]),
        (None, ["IngestMonth", "--service", "green", "--month", "2019-10"]),  # luigi --module luigi_tasks
    ]:
        started = time.monotonic()
        done = luigi_command([*args, "--scheduler-host", "127.0.0.1", "--scheduler-port", str(port)], config, program)
        seconds = time.monotonic() - started
        assert done.returncode == 35, done.stderr  # [retcode] scheduling_error
        assert done.stderr.strip() == line and done.stdout == ""
        assert seconds < 5
    assert server.total_requests() == 0 and not (tmp_path / "lake").exists()


def test_help_does_not_need_a_scheduler(tmp_path, server):
    config = mixed_source(server, tmp_path)
    done = luigi_command(["IngestMonth", "--help", "--scheduler-port", str(free_port())], config)
    assert done.returncode == 0 and "--service" in done.stdout, done.stderr


def test_a_sink_that_cannot_be_checked_is_named_on_the_line_without_a_month(tmp_path, server):
    config = mixed_source(server, tmp_path)
    args = [
        "green",
        "2019-10",
        "2019-11",
        "--sinks",
        "lake,postgres",
        "--postgres-dsn",
        "host=127.0.0.1 port=1 user=u dbname=d",
    ]
    done = luigi_command(args, config, program=BACKFILL)
    assert done.returncode == 35, done.stderr  # [retcode] scheduling_error
    lines = summary_of(done.stderr)
    assert row(lines, "-", "-")[2:5] == ["FAILED", "-", "-"]
    [cause] = row(lines, "-", "-")[5:]
    assert cause.startswith("Backfill: cannot tell whether it is done: cannot connect to PostgreSQL at u@127.0.0.1:1/d")
