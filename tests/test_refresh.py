"""Staying current with a source that republishes and lags: validators recorded with every download, --refresh
redoing what changed at the source, `latest` asked of the source, and months not published yet that are no failure.

The source is tests/source_server.py as the TLC's CloudFront answers: ETag and Last-Modified on every file, and a
file that is not there is HTTP 403 with S3's AccessDenied XML body. Months are counted back from today's, since
`latest` and "not published yet" are about the months the source may still be publishing.
"""

from __future__ import annotations

import collections
import datetime as dt
import json

import duckdb
import psycopg2
import pytest

from luigi_tasks import Backfill, IngestMonth, config, history
from luigi_tasks.catalog import GREEN, YELLOW
from luigi_tasks.errors import DataError
from luigi_tasks.lake import LakeEntry
from luigi_tasks.synthetic import write_trip_csv
from tests.conftest import (
    CSV_PATH,
    PARQUET_PATH,
    REPO,
    luigi_command,
    luigi_settings,
    month_path,
    pipeline_settings,
    run_tasks,
    serve_csv_month,
    serve_zones,
    write_config,
)
from tests.postgres_cluster import free_port
from tests.test_secret_spellings import webhook  # noqa: F401 - the fixture
from tests.test_summary import row, summary_of

BACKFILL = [str(REPO / "bin/backfill")]
STATUS = [str(REPO / "bin/status")]
DATASETS = {"yellow": YELLOW, "green": GREEN}


def back(months: int) -> dt.date:
    """The month `months` before the current one."""
    index = dt.date.today().year * 12 + dt.date.today().month - 1 - months
    return dt.date(index // 12, index % 12 + 1, 1)


def publish(server, tmp_path, name: str, when: dt.date, rows: int, seed: int = 0) -> None:
    """The month's file at the source, `rows` trips in the month (served again: republished, with a new ETag)."""
    csv = write_trip_csv(tmp_path / f"{name}-{when:%Y-%m}-{rows}.csv", DATASETS[name], when, rows, seed=seed)
    serve_csv_month(server, name, f"{when:%Y-%m}", csv.read_bytes())


def counts(pg_dsn: str, duckdb_file, lake) -> dict[str, dict[str, dict[str, int]]]:
    """Rows per service and month in each sink: the lake's manifests, PostgreSQL's and DuckDB's tables."""
    found: dict[str, dict[str, dict[str, int]]] = {"lake": {}, "postgres": {}, "duckdb": {}}
    for name in DATASETS:
        found["lake"][name] = {
            path.name[len(name) + 11 : -5]: LakeEntry.from_json(path.read_bytes()).manifest.rows_out
            for path in sorted(lake.glob(f"{name}/*/_{name}_tripdata_*.json"))
        }
        query = f"SELECT to_char(source_month, 'YYYY-MM'), count(*) FROM {name}_tripdata GROUP BY 1"
        with psycopg2.connect(pg_dsn) as conn, conn.cursor() as cur:
            cur.execute(query)
            found["postgres"][name] = dict(sorted(cur.fetchall()))
        conn.close()
        with duckdb.connect(str(duckdb_file), read_only=True) as db:
            rows = db.execute(f"SELECT strftime(source_month, '%Y-%m'), count(*) FROM prod.{name}_tripdata GROUP BY 1")
            found["duckdb"][name] = dict(sorted(rows.fetchall()))
    return found


def loads(history_file, family: str, name: str, when: dt.date) -> int:
    """How many times the run history has `family` done for the month."""
    params = {"service": name, "month": f"{when:%Y-%m}"}
    return sum(
        run["task_family"] == family and run["status"] == "DONE" and json.loads(run["params"]) == params
        for run in history.runs(history_file, limit=10_000)
    )


def test_three_monthly_cron_runs_keep_every_sink_as_the_source_serves_it(
    tmp_path,
    server,
    pg_dsn,
    webhook,  # noqa: F811 - the fixture imported above
):
    server.missing_status = 403  # CloudFront: a file that is not there is 403 with S3's AccessDenied
    serve_zones(server)
    lake = tmp_path / "lake"
    settings = {**pipeline_settings(server, lake), ("postgres", "dsn"): pg_dsn, ("notify", "webhook_url"): webhook.url}
    cfg = write_config(tmp_path / "luigi.cfg", settings)
    cron = ["yellow,green", f"{back(3):%Y-%m}", "latest", "--sinks", "lake,postgres,duckdb", "--refresh"]

    def run_cron() -> list[str]:
        done = luigi_command(cron, cfg, program=BACKFILL)
        assert done.returncode == 0, done.stderr  # everything the source has is done
        assert "Traceback" not in done.stderr
        return summary_of(done.stderr)

    def expect(yellow: dict[dt.date, int], green: dict[dt.date, int]) -> None:
        served = {
            "yellow": {f"{m:%Y-%m}": n for m, n in yellow.items()},
            "green": {f"{m:%Y-%m}": n for m, n in green.items()},
        }
        assert counts(pg_dsn, tmp_path / "taxi_rides_ny.duckdb", lake) == dict.fromkeys(
            ("lake", "postgres", "duckdb"), served
        )

    # First run: yellow has two months out, green one; green's second is not out yet (403 with the XML body).
    publish(server, tmp_path, "yellow", back(3), 50)
    publish(server, tmp_path, "yellow", back(2), 60)
    publish(server, tmp_path, "green", back(3), 40)
    table = run_cron()
    expect({back(3): 50, back(2): 60}, {back(3): 40})
    assert row(table, "green", f"{back(2):%Y-%m}")[2:] == ["not published yet", "-", "-"]
    assert row(table, "yellow", f"{back(2):%Y-%m}")[2] == "done"

    # A month later: yellow's next month and green's late one appear, yellow's oldest is republished with more rows,
    # and green's newest is not out yet.
    publish(server, tmp_path, "yellow", back(1), 70)
    publish(server, tmp_path, "green", back(2), 45)
    old_etag = server.routes[month_path(CSV_PATH, "yellow", f"{back(3):%Y-%m}")].etag
    publish(server, tmp_path, "yellow", back(3), 80, seed=1)
    new_etag = server.routes[month_path(CSV_PATH, "yellow", f"{back(3):%Y-%m}")].etag
    table = run_cron()
    expect({back(3): 80, back(2): 60, back(1): 70}, {back(3): 40, back(2): 45})
    republished = row(table, "yellow", f"{back(3):%Y-%m}")
    assert republished[2] == "done" and "LoadToPostgres" in republished[3] and "LoadToDuckDB" in republished[3]
    assert republished[4] == "duckdb 80, lake 80, postgres 80"
    assert f"    changed at the source: ETag {old_etag} -> {new_etag}" in table
    assert row(table, "green", f"{back(1):%Y-%m}")[2:] == ["not published yet", "-", "-"]
    assert all(line.split()[:2] != ["yellow", f"{back(2):%Y-%m}"] for line in table)  # unchanged: not scheduled
    history_file = tmp_path / "history.sqlite"
    for family in ("DownloadTripData", "ToParquet", "LoadToPostgres", "LoadToDuckDB"):
        assert loads(history_file, family, "yellow", back(3)) == 2, family  # once per publication
        assert loads(history_file, family, "yellow", back(2)) == 1, family

    # Nothing new: every month the lake holds is asked about (HEAD), nothing is downloaded, nothing runs.
    downloads, heads = sum(server.sent.values()), collections.Counter(server.heads)
    table = run_cron()
    expect({back(3): 80, back(2): 60, back(1): 70}, {back(3): 40, back(2): 45})
    assert sum(server.sent.values()) == downloads
    in_lake = [("yellow", back(3)), ("yellow", back(2)), ("yellow", back(1)), ("green", back(3)), ("green", back(2))]
    for name, when in in_lake:  # each asked about once
        assert (
            server.heads[month_path(CSV_PATH, name, f"{when:%Y-%m}")]
            - heads[month_path(CSV_PATH, name, f"{when:%Y-%m}")]
            == 1
        )
    assert [line.split()[:2] for line in table if line.split()[:1] in (["yellow"], ["green"])] == [
        ["green", f"{back(1):%Y-%m}"]
    ]
    assert row(table, "green", f"{back(1):%Y-%m}")[2:] == ["not published yet", "-", "-"]
    assert webhook.bodies == []  # not a failure, three times over


def fresh(*tasks):
    """run_tasks as a new run: the source's answers of an earlier run in this process are not reused."""
    with luigi_settings({}):
        return run_tasks(*tasks)


def test_ingest_month_refresh_redoes_a_republished_month_once(lake, server, tmp_path):
    publish(server, tmp_path, "yellow", back(5), 30)
    month_task = IngestMonth(service="yellow", month=back(5), sinks="lake,duckdb", refresh=True)
    assert fresh(month_task)[1] == {}
    assert fresh(month_task)[0].summary_text.count("Did not run any tasks") == 1  # nothing changed: nothing runs
    assert sum(server.sent.values()) == 2  # the month and the zone lookup, once

    publish(server, tmp_path, "yellow", back(5), 45, seed=2)
    result, failures = fresh(month_task)
    assert failures == {} and "LoadToDuckDB" in result.summary_text
    duckdb_file = lake.parent / "taxi_rides_ny.duckdb"
    with duckdb.connect(str(duckdb_file), read_only=True) as db:
        assert db.execute("SELECT count(*) FROM prod.yellow_tripdata").fetchone() == (45,)
    assert fresh(month_task)[0].summary_text.count("Did not run any tasks") == 1
    history_file = config.history().file
    assert [loads(history_file, f, "yellow", back(5)) for f in ("DownloadTripData", "ToParquet", "LoadToDuckDB")] == [
        2,
        2,
        2,
    ]


def test_a_month_fetched_before_validators_were_recorded_is_redone_only_when_its_size_differs(lake, server, tmp_path):
    publish(server, tmp_path, "yellow", back(5), 30)
    assert fresh(IngestMonth(service="yellow", month=back(5)))[1] == {}
    manifest_file = lake / f"yellow/{back(5):%Y}/_yellow_tripdata_{back(5):%Y-%m}.json"
    old = json.loads(manifest_file.read_text())
    old["manifest"].pop("source_version")  # as a lake filled before validators were recorded
    manifest_file.write_text(json.dumps(old))
    refresh = Backfill(services="yellow", start=back(5), stop=back(5), refresh=True)
    path = month_path(CSV_PATH, "yellow", f"{back(5):%Y-%m}")

    server.routes[path].etag, server.routes[path].last_modified = '"other"', "Tue, 01 Dec 2026 00:00:00 GMT"
    assert "Did not run any tasks" in fresh(refresh)[0].summary_text  # the same size: the same file
    publish(server, tmp_path, "yellow", back(5), 31)
    assert fresh(refresh)[1] == {}
    assert LakeEntry.from_json(manifest_file.read_bytes()).manifest.rows_out == 31
    assert LakeEntry.from_json(manifest_file.read_bytes()).manifest.source_version.etag == server.routes[path].etag


def test_a_month_the_source_no_longer_has_is_a_failure_and_the_lake_keeps_it(
    tmp_path,
    server,
    webhook,  # noqa: F811 - the fixture imported above
):
    server.missing_status = 403
    serve_zones(server)
    publish(server, tmp_path, "yellow", back(6), 30)
    publish(server, tmp_path, "yellow", back(5), 35)
    settings = {**pipeline_settings(server, tmp_path / "lake"), ("notify", "webhook_url"): webhook.url}
    cfg = write_config(tmp_path / "luigi.cfg", settings)
    args = ["yellow", f"{back(6):%Y-%m}", f"{back(5):%Y-%m}", "--refresh"]
    assert luigi_command(args, cfg, program=BACKFILL).returncode == 0

    del server.routes[month_path(CSV_PATH, "yellow", f"{back(6):%Y-%m}")]  # the source drops a month it served
    done = luigi_command(args, cfg, program=BACKFILL)
    assert done.returncode == 30, done.stderr  # [retcode] task_failed
    url = server.base_url + month_path(CSV_PATH, "yellow", f"{back(6):%Y-%m}")
    error = (
        f"yellow {back(6):%Y-%m} is not published at {url} (HTTP 403), though the lake has it from there: the lake"
        " and the sinks keep it as it was"
    )
    assert row(summary_of(done.stderr), "yellow", f"{back(6):%Y-%m}")[2:] == [
        "FAILED",
        "-",
        "lake 30",  # what the lake still holds
        f"IngestMonth: {error}",
    ]
    assert [body["error"] for body in webhook.bodies] == [error]
    manifest = tmp_path / f"lake/yellow/{back(6):%Y}/_yellow_tripdata_{back(6):%Y-%m}.json"
    assert LakeEntry.from_json(manifest.read_bytes()).manifest.rows_out == 30


def test_a_month_missing_before_a_published_one_stays_a_failure(tmp_path, server):
    server.missing_status = 403
    serve_zones(server)
    publish(server, tmp_path, "yellow", back(1), 30)  # the newest month is out, the one before it is not
    cfg = write_config(tmp_path / "luigi.cfg", pipeline_settings(server, tmp_path / "lake"))
    done = luigi_command(["yellow", f"{back(2):%Y-%m}", "latest"], cfg, program=BACKFILL)
    assert done.returncode == 30, done.stderr
    table = summary_of(done.stderr)
    url = server.base_url + month_path(CSV_PATH, "yellow", f"{back(2):%Y-%m}")
    assert row(table, "yellow", f"{back(2):%Y-%m}")[2:] == [
        "FAILED",
        "-",
        "-",
        f"DownloadTripData: yellow {back(2):%Y-%m} is not published at {url} (HTTP 403)",
    ]
    assert row(table, "yellow", f"{back(1):%Y-%m}")[2] == "done"


def test_latest_is_the_newest_month_the_source_has_of_each_service(lake, server, tmp_path):
    server.missing_status = 403
    publish(server, tmp_path, "yellow", back(1), 20)
    publish(server, tmp_path, "green", back(2), 20)
    assert IngestMonth(service="green", month="latest").month == back(2)
    assert IngestMonth(service="yellow", month="latest").month == back(1)
    assert Backfill(services="yellow,green", start=back(3), stop="latest").stop == back(1)
    heads = sum(server.heads.values())
    assert IngestMonth(service="green", month="latest", sinks="lake,duckdb").month == back(2)
    assert sum(server.heads.values()) == heads  # asked once per run

    with luigi_settings({("tlc", "publication_lag_months"): "1"}), pytest.raises(DataError) as error:
        IngestMonth(service="green", month="latest")
    assert str(error.value) == (
        f"latest: the source has no month of green from {back(1):%Y-%m} to {back(0):%Y-%m} (e.g. {server.base_url}"
        f"{month_path(CSV_PATH, 'green', f'{back(0):%Y-%m}')}); [tlc] publication_lag_months 1 is how many months"
        " back latest looks"
    )


def test_not_published_yet_holds_under_source_auto_and_the_tlcs_403(lake, server, tmp_path):
    server.missing_status = 403  # as CloudFront answers for the TLC's Parquet
    with luigi_settings({("tlc", "source"): "auto"}):
        result, failures = run_tasks(IngestMonth(service="fhv", month=back(1)))
        assert failures == {} and result.status.name == "SUCCESS"
        assert server.heads[month_path(PARQUET_PATH, "fhv", f"{back(1):%Y-%m}")] == 1
        assert sum(server.sent.values()) == 0  # nothing downloaded, nothing failed

        # A month of the course's csv backups (2019-01..2021-07), long published: missing, it is a failure.
        result, failures = run_tasks(IngestMonth(service="fhv", month=dt.date(2021, 7, 1)))
        [error] = failures.values()
        assert str(error) == (
            f"fhv 2021-07 is not published at {server.base_url}{month_path(CSV_PATH, 'fhv', '2021-07')} (HTTP 403)"
        )


def loaded_then_republished(server, tmp_path) -> tuple[str, str]:
    """Yellow's months 3 and 2 before the current one in the lake, then the older republished with 40 rows instead
    of 30, the newer months not out yet (CloudFront's 403): the ETag of the republished month before and after."""
    server.missing_status = 403
    publish(server, tmp_path, "yellow", back(3), 30)
    publish(server, tmp_path, "yellow", back(2), 30)
    assert fresh(Backfill(services="yellow", start=back(3), stop=back(2)))[1] == {}
    path = month_path(CSV_PATH, "yellow", f"{back(3):%Y-%m}")
    old = server.routes[path].etag
    publish(server, tmp_path, "yellow", back(3), 40, seed=3)
    return old, server.routes[path].etag


def test_a_dry_run_shows_what_changed_at_the_source_and_what_is_not_published_yet(lake, server, tmp_path, capsys):
    old, new = loaded_then_republished(server, tmp_path)
    before = {p: p.read_bytes() for p in lake.rglob("*") if p.is_file()}
    capsys.readouterr()
    plan = Backfill(services="yellow", start=back(3), stop=back(0), refresh=True, dry_run=True)
    assert fresh(plan)[1] == {}
    assert capsys.readouterr().out.splitlines() == [
        f"Backfill {back(3):%Y-%m}..{back(0):%Y-%m} into lake (dry run):",
        f"yellow: 1 done {back(2):%Y-%m}",
        f"yellow: 1 to run {back(3):%Y-%m}",
        f"    into lake: {back(3):%Y-%m}",
        f"    {back(3):%Y-%m} changed at the source: ETag {old} -> {new}",
        f"yellow: not published yet: {back(1):%Y-%m}..{back(0):%Y-%m}",
    ]
    assert {p: p.read_bytes() for p in lake.rglob("*") if p.is_file()} == before  # nothing changed, nothing fetched


def test_status_shows_months_not_published_yet_and_asked_to_check_the_source_those_changed(lake, server, tmp_path):
    old, new = loaded_then_republished(server, tmp_path)
    cfg = write_config(tmp_path / "luigi.cfg", pipeline_settings(server, lake))
    args = ["yellow", f"{back(3):%Y-%m}", f"{back(0):%Y-%m}", "--sinks", "lake,duckdb"]

    shown = luigi_command(args, cfg, program=STATUS)
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.splitlines()[1:] == [
        "service  month    rows  lake               duckdb",
        f"yellow   {back(3):%Y-%m}    30  done               missing",
        f"yellow   {back(2):%Y-%m}    30  done               missing",
        f"yellow   {back(1):%Y-%m}     -  not published yet  not published yet",
        f"yellow   {back(0):%Y-%m}     -  not published yet  not published yet",
        "zone lookup: lake done, duckdb missing",
        "yellow: 4 months; lake 2 done, 2 not published yet; duckdb 2 missing, 2 not published yet;"
        " 0 with quality warnings",
    ]
    checked = luigi_command([*args, "--check-source"], cfg, program=STATUS)
    assert checked.returncode == 0, checked.stderr
    assert checked.stdout.splitlines()[1:5] == [
        "service  month    rows  lake               duckdb             source",
        f"yellow   {back(3):%Y-%m}    30  done               missing            changed",
        f"    source: ETag {old} -> {new}",
        f"yellow   {back(2):%Y-%m}    30  done               missing            same",
    ]
    assert "; 1 changed at the source; 0 with quality warnings" in checked.stdout
    machine = json.loads(luigi_command([*args, "--check-source", "--json"], cfg, program=STATUS).stdout)
    assert [(m["month"], m["sinks"]["lake"], m["source"]) for m in machine["months"]] == [
        (f"{back(3):%Y-%m}", "done", "changed"),
        (f"{back(2):%Y-%m}", "done", "same"),
        (f"{back(1):%Y-%m}", "not published yet", None),
        (f"{back(0):%Y-%m}", "not published yet", None),
    ]
    assert sum(server.sent.values()) == 3  # two months and the zone lookup, by the backfill; status downloads nothing


def test_latest_with_the_source_unreachable_is_one_line_before_anything_runs(tmp_path):
    port = free_port()  # nothing listens there
    settings = {
        ("tlc", "source"): "csv",
        ("tlc", "csv_url"): f"http://127.0.0.1:{port}/{{service}}/{{year}}-{{month}}.csv.gz?sig=s3cr3t",
        ("tlc", "retries"): "0",
        ("lake", "root"): str(tmp_path / "lake"),
    }
    done = luigi_command(["yellow", "2026-01", "latest"], write_config(tmp_path / "luigi.cfg", settings), BACKFILL)
    assert done.returncode == 40, done.stderr  # [retcode] unhandled_exception: nothing was scheduled
    [error] = [line for line in done.stderr.splitlines() if "ERROR" in line]
    assert error.endswith(
        f"yellow {back(0):%Y-%m}: asking about http://127.0.0.1:{port}/yellow/{back(0):%Y-%m}.csv.gz failed:"
        f" connection refused by 127.0.0.1:{port}; gave up after 1 attempts"
    )
    assert "s3cr3t" not in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "lake").exists()
