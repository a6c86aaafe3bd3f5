"""Backfill: one command for a range, bulk completeness checks, a dry run, reruns that do nothing."""

from __future__ import annotations

import configparser
import subprocess
import sys

import luigi
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
import pytest

from luigi_tasks import Backfill, IngestMonth, ToParquet, ZonesToParquet, config
from luigi_tasks.catalog import YELLOW
from luigi_tasks.errors import DataError
from luigi_tasks.lake import LakeEntry
from luigi_tasks.synthetic import write_trip_csv
from tests.conftest import (
    CSV_PATH,
    DATA,
    PARQUET_PATH,
    REPO,
    command_env,
    files_under,
    luigi_command,
    luigi_settings,
    month,
    month_path,
    pipeline_settings,
    run_tasks,
    serve_csv_month,
    serve_zones,
    write_config,
)

YELLOW_HEAD = (DATA / "yellow_tripdata_2020-07_head266.csv").read_bytes()
GREEN_HEAD = (DATA / "green_tripdata_2019-01_head99.csv").read_bytes()


def serve_range(server, service: str, body: bytes, months: list[str]) -> None:
    for at in months:
        serve_csv_month(server, service, at, body)


def dry_run(capsys, **params) -> str:
    capsys.readouterr()
    result, failures = run_tasks(Backfill(dry_run=True, **params))
    assert failures == {} and result.scheduling_succeeded
    return capsys.readouterr().out


def test_dry_run_lists_exactly_the_missing_months_and_runs_nothing(lake, server, capsys):
    serve_range(server, "yellow", YELLOW_HEAD, ["2020-07"])
    serve_zones(server)
    run_tasks(IngestMonth(service="yellow", month=month("2020-07")))
    requests = server.total_requests()

    out = dry_run(capsys, services="yellow,fhvhv", start=month("2019-01"), stop=month("2020-12"))
    assert out.splitlines() == [
        "Backfill 2019-01..2020-12 into lake (dry run):",
        "yellow: 1 done 2020-07",
        "yellow: 23 to run 2019-01..2020-06, 2020-08..2020-12",
        "    into lake: 2019-01..2020-06, 2020-08..2020-12",
        "fhvhv: 0 done",
        "fhvhv: 23 to run 2019-02..2020-12",
        "    into lake: 2019-02..2020-12",
        "fhvhv: skipped, not published by the TLC: 2019-01",
    ]
    assert server.total_requests() == requests  # nothing downloaded
    assert len(files_under(lake)) == 8  # 2 raw files and their validators, 2 Parquet files and their manifests


def test_green_before_2014_is_listed_as_not_published_and_not_fetched(lake, server, capsys):
    out = dry_run(capsys, services="green", start=month("2013-06"), stop=month("2014-02"))
    assert out.splitlines() == [
        "Backfill 2013-06..2014-02 into lake (dry run):",
        "green: 0 done",
        "green: 2 to run 2014-01..2014-02",
        "    into lake: 2014-01..2014-02",
        "green: skipped, not published by the TLC: 2013-06..2013-12",
        "zone lookup: to load into lake",
    ]
    assert server.total_requests() == 0


def test_backfill_runs_the_missing_months_and_a_rerun_runs_nothing(pg_lake, pg_dsn, server, capsys):
    serve_range(server, "yellow", YELLOW_HEAD, ["2020-07", "2020-08", "2020-09"])
    serve_range(server, "green", GREEN_HEAD, ["2020-07", "2020-08", "2020-09"])
    serve_zones(server)
    run_tasks(IngestMonth(service="green", month=month("2020-08"), sinks="lake,postgres"))

    backfill = dict(services="yellow,green", start=month("2020-07"), stop=month("2020-09"), sinks="lake,postgres")
    out = dry_run(capsys, **backfill)
    assert "yellow: 3 to run 2020-07..2020-09" in out
    assert "green: 1 done 2020-08" in out and "green: 2 to run 2020-07, 2020-09" in out

    result, failures = run_tasks(Backfill(**backfill))
    assert failures == {} and result.status == luigi.LuigiStatusCode.SUCCESS
    ran = result.summary_text
    assert "IngestMonth" in ran and "5 IngestMonth" in ran  # the five missing months, not the done one
    assert len([p for p in files_under(pg_lake) if p.endswith(".parquet") and "tripdata" in p]) == 6

    requests = server.total_requests()
    result, _ = run_tasks(Backfill(**backfill))
    assert result.status == luigi.LuigiStatusCode.SUCCESS
    assert "Did not run any tasks" in result.summary_text
    assert server.total_requests() == requests
    assert "0 to run" in dry_run(capsys, **backfill)


def test_a_lake_file_removed_is_found_missing(lake, server, capsys):
    serve_range(server, "yellow", YELLOW_HEAD, ["2020-07", "2020-08"])
    serve_zones(server)
    run_tasks(Backfill(services="yellow", start=month("2020-07"), stop=month("2020-08")))
    (lake / "yellow/2020/yellow_tripdata_2020-08.parquet").unlink()
    out = dry_run(capsys, services="yellow", start=month("2020-07"), stop=month("2020-08"))
    assert "yellow: 1 to run 2020-08" in out


def test_luigis_first_check_of_a_missing_month_is_answered_by_the_bulk_check(lake, server, monkeypatch):
    backfill = Backfill(services="yellow", start=month("2020-01"), stop=month("2020-01"))
    assert not backfill.complete()  # the bulk check: the month and the zone lookup are missing
    tasks = backfill.requires()
    asked = []
    for kind in (IngestMonth, ToParquet, ZonesToParquet):
        monkeypatch.setattr(kind, "is_complete", lambda self: asked.append(self.task_family) or False)
    assert [task.complete() for task in tasks] == [False, False]
    assert not ToParquet(service="yellow", month=month("2020-01")).complete()
    assert asked == []  # luigi's first check of each: no round trip
    backfill.requires()  # luigi asks again before Backfill runs: the plan is not told twice
    assert [task.complete() for task in tasks] == [False, False]
    assert not ToParquet(service="yellow", month=month("2020-01")).complete()
    assert asked == ["ZonesToParquet", "IngestMonth", "ToParquet"]  # from then on, each asks


def test_luigis_completion_cache_is_on_unless_a_config_file_says_otherwise():
    from luigi_tasks import cli

    parser = luigi.configuration.get_config()
    with luigi_settings({("worker", "cache_task_completion"): "false"}):
        cli._cache_completion()
        assert parser.get("worker", "cache_task_completion") == "false"
        parser.remove_option("worker", "cache_task_completion")
        cli._cache_completion()
        assert parser.get("worker", "cache_task_completion") == "true"


def test_bad_ranges_and_services():
    with pytest.raises(DataError) as error:
        Backfill(services="yellow", start=month("2020-01"), stop=month("2019-01"))
    assert str(error.value) == "--stop '2019-01': expected --start 2020-01 or a later month"
    with pytest.raises(DataError) as error:
        Backfill(services="yellow,taxi", start=month("2020-01"), stop=month("2020-01"))
    assert str(error.value) == (
        "Backfill services 'yellow,taxi': expected all, or one or more of yellow, green, fhv, fhvhv,"
        " separated by commas"
    )
    assert Backfill(services="all", start=month("2020-01"), stop=month("2020-01")).services == (
        "yellow", "green", "fhv", "fhvhv",
    )  # fmt: skip


def test_history_keeps_every_run_with_rows_and_outcome(pg_lake, pg_dsn, server, tmp_path):
    from luigi_tasks import config, history

    serve_range(server, "yellow", YELLOW_HEAD, ["2020-07"])
    serve_zones(server)
    run_tasks(Backfill(services="yellow,fhvhv", start=month("2019-01"), stop=month("2019-02"), sinks="lake"))
    run_tasks(Backfill(services="yellow", start=month("2020-07"), stop=month("2020-07"), sinks="lake,postgres"))
    runs = history.runs(config.history().file, limit=100)
    by_family: dict[str, list[dict]] = {}
    for run in runs:
        by_family.setdefault(run["task_family"], []).append(run)
    assert [r["rows"] for r in by_family["LoadToPostgres"]] == [266]
    assert {r["rows"] for r in by_family["ToParquet"] if r["status"] == "DONE"} == {266}
    failed = [r for r in runs if r["status"] == "FAILED"]
    assert {r["task_id"].split("_")[0] for r in failed} == {"DownloadTripData"}
    assert all("is not published at" in r["error"] for r in failed)
    assert all(r["seconds"] is not None and r["seconds"] >= 0 for r in runs)
    assert history.latest_rows(config.history().file, [by_family["LoadToPostgres"][0]["task_id"]]) == {
        by_family["LoadToPostgres"][0]["task_id"]: 266
    }


def test_a_dry_run_is_recorded_as_a_dry_run_not_as_done(tmp_path, server):
    config = write_config(tmp_path / "luigi.cfg", pipeline_settings(server, tmp_path / "lake"))
    done = luigi_command(["yellow", "2020-07", "2020-08", "--dry-run"], config, program=[str(REPO / "bin/backfill")])
    assert done.returncode == 0, done.stderr
    assert "yellow: 2 to run 2020-07..2020-08" in done.stdout
    assert "luigi_tasks: no month was scheduled in this run" in done.stderr  # not "done  Backfill"
    runs = subprocess.run([sys.executable, "-m", "luigi_tasks.runs"], cwd=REPO, env=command_env(config),
                          capture_output=True, text=True, check=True).stdout.splitlines()  # fmt: skip
    assert len(runs) == 2 and runs[1].split()[2] == "DRY-RUN", runs
    assert runs[1].endswith("Backfill(services=yellow, sinks=lake, start=2020-07, stop=2020-08)")
    assert files_under(tmp_path / "lake") == []


def test_runs_command_shows_the_history(pg_lake, server, capsys):
    from luigi_tasks import config, runs

    serve_range(server, "yellow", YELLOW_HEAD, ["2020-07"])
    serve_zones(server)
    run_tasks(IngestMonth(service="yellow", month=month("2020-07")))
    capsys.readouterr()
    runs.main(["--path", str(config.history().file), "--limit", "10"])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["finished", "status", "seconds", "rows", "task"]
    [to_parquet] = [line for line in lines if " ToParquet(" in line]
    assert to_parquet.split()[2:3] == ["DONE"] and "266" in to_parquet.split()
    assert to_parquet.endswith("ToParquet(month=2020-07, service=yellow)")


def test_runs_command_into_a_closed_pipe_ends_quietly(tmp_path):
    import sqlite3

    from luigi_tasks import history

    path = tmp_path / "history.sqlite"
    history.record(path, task_id="T", task_family="ToParquet", params={"service": "yellow"}, status="DONE",
                   started=None)  # fmt: skip
    with sqlite3.connect(path) as db:  # far more lines than a pipe holds, so `head` closes it mid-write
        db.executemany(
            "INSERT INTO runs (task_id, task_family, params, status, finished) VALUES (?, ?, ?, ?, ?)",
            [(f"T{i}", "ToParquet", '{"service": "yellow"}', "DONE", "2026-01-01 00:00:00") for i in range(20_000)],
        )
    shown = subprocess.run(
        f"{sys.executable} -m luigi_tasks.runs --path {path} --limit 20000 | head -1",
        shell=True, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert shown.stdout.split() == ["finished", "status", "seconds", "rows", "task"]
    assert shown.stderr == ""


def test_source_auto_takes_the_course_csv_to_2021_07_and_the_tlc_parquet_after(lake, server, tmp_path):
    csv = write_trip_csv(tmp_path / "trips.csv", YELLOW, month("2021-07"), 40, seed=3)
    serve_csv_month(server, "yellow", "2021-07", csv.read_bytes())
    parquet = pa.BufferOutputStream()
    pq.write_table(pa_csv.read_csv(write_trip_csv(tmp_path / "august.csv", YELLOW, month("2021-08"), 30)), parquet)
    parquet_url = server.add(month_path(PARQUET_PATH, "yellow", "2021-08"), parquet.getvalue().to_pybytes())
    serve_zones(server)

    with luigi_settings({("tlc", "source"): "auto"}):
        result, failures = run_tasks(Backfill(services="yellow", start=month("2021-07"), stop=month("2021-08")))

    assert failures == {} and result.status == luigi.execution_summary.LuigiStatusCode.SUCCESS
    july, august = (
        LakeEntry.from_json((lake / f"yellow/2021/_yellow_tripdata_2021-{mm}.json").read_bytes()).manifest
        for mm in ("07", "08")
    )
    assert (july.source_url, july.rows_out) == (server.base_url + month_path(CSV_PATH, "yellow", "2021-07"), 40)
    assert (august.source_url, august.rows_out) == (parquet_url, 30)
    assert [p for p in files_under(lake) if p.startswith("raw/yellow/y")] == [
        "raw/yellow/yellow_tripdata_2021-07.csv.gz",
        "raw/yellow/yellow_tripdata_2021-08.parquet",
    ]


def test_source_auto_picks_per_service_and_month_and_is_the_shipped_default():
    shipped = configparser.ConfigParser()
    shipped.read(REPO / "luigi.cfg")
    assert shipped.get("tlc", "source") == config.tlc.source._default == "auto"
    settings = config.tlc(source="auto", csv_url="c/{service}/{year}-{month}", parquet_url="p/{service}/{year}-{month}")
    assert [settings.url_for(s, y, m) for s, y, m in [("green", "2019", "01"), ("green", "2021", "07"),
                                                       ("green", "2021", "08"), ("fhvhv", "2019", "02"),
                                                       ("fhv", "2018", "12"), ("yellow", "2024", "01")]] == [
        "c/green/2019-01", "c/green/2021-07", "p/green/2021-08", "c/fhvhv/2019-02", "p/fhv/2018-12", "p/yellow/2024-01",
    ]  # fmt: skip
