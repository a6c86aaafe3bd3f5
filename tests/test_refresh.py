"""Staying current with a source that lags: `latest` asked of the source, and months not published yet that are no
failure.

The source is tests/source_server.py as the TLC's CloudFront answers: ETag and Last-Modified on every file, and a
file that is not there is HTTP 403 with S3's AccessDenied XML body. Months are counted back from today's, since
`latest` and "not published yet" are about the months the source may still be publishing.
"""

from __future__ import annotations

import datetime as dt

import pytest

from luigi_tasks import Backfill, IngestMonth
from luigi_tasks.catalog import GREEN, YELLOW
from luigi_tasks.errors import DataError
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
from tests.test_summary import row, summary_of

BACKFILL = [str(REPO / "bin/backfill")]
DATASETS = {"yellow": YELLOW, "green": GREEN}


def back(months: int) -> dt.date:
    """The month `months` before the current one."""
    index = dt.date.today().year * 12 + dt.date.today().month - 1 - months
    return dt.date(index // 12, index % 12 + 1, 1)


def publish(server, tmp_path, name: str, when: dt.date, rows: int, seed: int = 0) -> None:
    """The month's file at the source, `rows` trips in the month (served again: republished, with a new ETag)."""
    csv = write_trip_csv(tmp_path / f"{name}-{when:%Y-%m}-{rows}.csv", DATASETS[name], when, rows, seed=seed)
    serve_csv_month(server, name, f"{when:%Y-%m}", csv.read_bytes())


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
