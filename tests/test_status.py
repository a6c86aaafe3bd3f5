"""bin/status: months by sink from the lake's manifests and the sinks' bulk checks, as text, JSON and a page."""

from __future__ import annotations

import json
from html.parser import HTMLParser

import pytest

from luigi_tasks import IngestMonth, ToParquet
from luigi_tasks.quality import Limits
from luigi_tasks.status import collect
from luigi_tasks.tasks.sinks import SINKS
from tests.conftest import DATA, REPO, luigi_command, month, pipeline_settings, run_tasks, serve_csv_month, serve_zones
from tests.conftest import write_config as write_settings
from tests.test_quality import defective_csv
from tests.test_sinks import every_sink  # noqa: F401 - the fixture
from tests.test_visualiser import CHROMIUM, chromium

STATUS = [str(REPO / "bin/status")]
WARNINGS_OF_JANUARY = [  # the defects of tests.test_quality, in 900 rows
    "null_pickup 2 rows (0.22%) > warn 0.001",
    "outside_month 3 rows (0.33%) > warn 0.001",
    "absurd_amount 2 rows (0.22%) > warn 0.0001",
    "negative_distance 1 row (0.11%) > warn 0.001",  # 1 in 1,000 is not above 0.1%; 1 in 900 is
    "absurd_distance 3 rows (0.33%) > warn 0.0001",
    "unknown_location 4 rows (0.44%) > warn 0.001",
]


@pytest.fixture
def four_months(pg_lake, pg_dsn, server, tmp_path):
    """yellow 2020-12 in the lake and PostgreSQL; 2021-01 too, then redone in the lake with 900 rows and known
    defects (PostgreSQL out of date); 2021-02 in the lake only, a third of January's rows; 2021-03 nowhere."""
    clean = {}
    serve_zones(server)
    for at, rows in (("2020-12", 1_000), ("2021-01", 1_000), ("2021-02", 300)):
        clean[at] = defective_csv(tmp_path / f"{at}.csv", defects={}, rows=rows, at=at).read_bytes()
        serve_csv_month(server, "yellow", at, clean[at])
    for at in ("2020-12", "2021-01"):
        assert run_tasks(IngestMonth(service="yellow", month=month(at), sinks="lake,postgres"))[1] == {}
    assert run_tasks(IngestMonth(service="yellow", month=month("2021-02")))[1] == {}
    serve_csv_month(server, "yellow", "2021-01", defective_csv(tmp_path / "redone.csv", rows=900).read_bytes())
    (pg_lake / "raw/yellow/yellow_tripdata_2021-01.csv.gz").unlink()  # the TLC republished the month
    assert run_tasks(ToParquet(service="yellow", month=month("2021-01"), reload=True))[1] == {}
    settings = {**pipeline_settings(server, pg_lake), ("postgres", "dsn"): pg_dsn}
    return write_settings(tmp_path / "luigi.cfg", settings)


def status(config, *options: str):
    return luigi_command(["yellow", "2020-12", "2021-03", "--sinks", "lake,postgres", *options], config, STATUS)


def test_status_text_and_json(four_months):
    done = status(four_months)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "luigi_tasks status 2020-12..2021-03",
        "service  month     rows  lake     postgres",
        "yellow   2020-12  1,000  done     done",
        "yellow   2021-01    900  done     out of date",
        *[f"    quality: {warning}" for warning in WARNINGS_OF_JANUARY],
        "yellow   2021-02    300  done     missing",
        "    quality: row_change 600 rows (66.67%) > warn 0.5",
        "yellow   2021-03      -  missing  missing",
        "zone lookup: lake done, postgres done",
        "yellow: 4 months; lake 3 done, 1 missing; postgres 1 done, 1 out of date, 2 missing; 2 with quality warnings",
    ]

    machine = json.loads(status(four_months, "--json").stdout)
    assert (machine["start"], machine["stop"], machine["sinks"]) == ("2020-12", "2021-03", ["lake", "postgres"])
    assert [(m["month"], m["rows"], m["sinks"]) for m in machine["months"]] == [
        ("2020-12", 1_000, {"lake": "done", "postgres": "done"}),
        ("2021-01", 900, {"lake": "done", "postgres": "out of date"}),
        ("2021-02", 300, {"lake": "done", "postgres": "missing"}),
        ("2021-03", None, {"lake": "missing", "postgres": "missing"}),
    ]
    assert machine["months"][2]["quality"] == [
        {"check": "row_change", "level": "warn", "rows": 600, "fraction": 600 / 900, "threshold": 0.5}
    ]
    assert [f["check"] for f in machine["months"][1]["quality"]] == [w.split()[0] for w in WARNINGS_OF_JANUARY]
    assert machine["zones"] == {"lake": "done", "postgres": "done"}


def test_status_mistakes_are_one_line(four_months):
    backwards = luigi_command(["yellow", "2021-03", "2020-12"], four_months, STATUS)
    assert (backwards.returncode, backwards.stderr) == (2, "status: --stop 2020-12 is before --start 2021-03\n")
    unknown = status(four_months, "--sinks", "lake,warehouse")
    assert unknown.returncode == 2
    assert unknown.stderr == (
        "status: --sinks 'lake,warehouse': expected one or more of lake, postgres, duckdb, gcs, bigquery, s3,"
        " azure, separated by commas\n"
    )


class Cells(HTMLParser):
    """The grid's cells as (title, state, text shown) and the page's whole text."""

    def __init__(self) -> None:
        super().__init__()
        self.cells: list[list[str]] = []
        self.text: list[str] = []
        self._in_cell = False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self._in_cell = "data-state" in attrs
        if self._in_cell:
            self.cells.append([attrs["title"], attrs["data-state"], ""])

    def handle_data(self, data):
        self.text.append(data)
        if self._in_cell:
            self.cells[-1][2] += data.strip()

    def handle_endtag(self, tag):
        self._in_cell = False


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (.ci/run installs it)")
def test_status_page_in_a_browser(four_months, tmp_path):
    page = tmp_path / "status.html"
    assert status(four_months, "--html", str(page)).returncode == 0
    assert "http" not in page.read_text().replace("http-equiv", "")  # no external asset: nothing to fetch
    dom = chromium("--dump-dom", page.as_uri(), profile=tmp_path / "profile")
    assert dom.returncode == 0, dom.stderr
    parsed = Cells()
    parsed.feed(dom.stdout)
    assert parsed.cells == [
        ["yellow 2020-12 lake: done, 1,000 rows", "done", "1.0k"],
        ["yellow 2021-01 lake: done, 900 rows; 6 quality warnings", "done", "900"],
        ["yellow 2021-02 lake: done, 300 rows; 1 quality warning", "done", "300"],
        ["yellow 2021-03 lake: missing", "missing", "-"],
        ["yellow 2020-12 postgres: done, 1,000 rows", "done", "1.0k"],
        ["yellow 2021-01 postgres: out of date, 900 rows; 6 quality warnings", "out of date", "old"],
        ["yellow 2021-02 postgres: missing, 300 rows; 1 quality warning", "missing", "-"],
        ["yellow 2021-03 postgres: missing", "missing", "-"],
    ]
    text = " ".join(" ".join(parsed.text).split())
    assert "2021-02: row_change 600 rows (66.67%) > warn 0.5" in text
    assert all(f"2021-01: {warning}" in text for warning in WARNINGS_OF_JANUARY)
    assert "zone lookup: lake done, postgres done" in text
    # The whole history's page, and its screenshot: tests/test_history.py


def test_every_sink_tells_out_of_date_from_missing(every_sink, server):  # noqa: F811
    july, august = month("2020-07"), month("2020-08")
    sinks = tuple(SINKS)
    assert run_tasks(IngestMonth(service="yellow", month=july, sinks=",".join(sinks)))[1] == {}
    assert [m.sinks for m in collect(("yellow",), july, july, sinks, Limits()).months] == [dict.fromkeys(sinks, "done")]

    first_100 = b"".join((DATA / "yellow_tripdata_2020-07_head266.csv").read_bytes().splitlines(keepends=True)[:101])
    serve_csv_month(server, "yellow", "2020-07", first_100)
    (every_sink / "raw/yellow/yellow_tripdata_2020-07.csv.gz").unlink()  # the TLC republished the month
    assert run_tasks(ToParquet(service="yellow", month=july, reload=True))[1] == {}
    found = collect(("yellow",), july, august, sinks, Limits())
    assert [(m.month, m.rows, m.sinks) for m in found.months] == [
        ("2020-07", 100, {"lake": "done", **dict.fromkeys(sinks[1:], "out of date")}),
        ("2020-08", None, dict.fromkeys(sinks, "missing")),
    ]
    assert found.zones == dict.fromkeys(sinks, "done")
