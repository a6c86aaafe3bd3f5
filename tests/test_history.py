"""The whole history at once: status, a dry run and the status page over every month of every service since 2009.

The lake is filled directly (one real conversion per service, its file and manifest then written for every month
with the lake's own functions), which is much faster than running the graph for some 600 months."""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
from collections import Counter

import pytest

from luigi_tasks import source
from luigi_tasks.catalog import SERVICES, ZONES
from luigi_tasks.convert import to_canonical_parquet
from luigi_tasks.files import fingerprints_of
from luigi_tasks.lake import Lake, LakeEntry, canonical_key
from luigi_tasks.synthetic import write_trip_csv
from luigi_tasks.tasks.backfill import months_between
from tests.conftest import REPO, luigi_command, month_path, pipeline_settings, serve_zones, write_config
from tests.test_visualiser import ARTIFACTS, CHROMIUM, chromium

CSV_PATH = "/csv/{service}/{service}_tripdata_{year}-{month}.csv.gz"
GAP = ("green", "2015-06")  # a month the lake lacks in the middle of the range: missing


@pytest.fixture
def whole_history(tmp_path, server):
    """Every month of every service from its first month to the month before the newest the source has, in the
    lake, but for GAP; the source has that newest month of fhvhv only (missing from the lake: to run), so the
    other services' newest month is not published yet. Returns (config, newest, months per service)."""
    server.missing_status = 403
    serve_zones(server)
    newest, last_in_lake = source.window()[1:3]  # the month before the current one, and the one before it
    server.add(month_path(CSV_PATH, "fhvhv", f"{newest:%Y-%m}"), b"fhvhv")  # only asked about (HEAD)
    for name in ("yellow", "green", "fhv"):
        server.add(month_path(CSV_PATH, name, f"{last_in_lake:%Y-%m}"), name.encode())
    lake = Lake(str(tmp_path / "lake"))
    months = {}
    for name, dataset in SERVICES.items():
        months[name] = months_between(dataset.first_month, newest)
        raw = write_trip_csv(tmp_path / f"{name}.csv", dataset, dataset.first_month, 20, seed=1)
        first = canonical_key(dataset, dataset.first_month)
        manifest = to_canonical_parquet(raw, lake.local_path(first), dataset=dataset, month=dataset.first_month,
                                        source_url="x")  # fmt: skip
        fingerprints = fingerprints_of(lake.local_path(first))
        for month in months[name][:-1]:
            if (name, f"{month:%Y-%m}") == GAP:
                continue
            key = canonical_key(dataset, month)
            if key != first:
                lake.local_path(key).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(lake.local_path(first), lake.local_path(key))
            lake.write_entry(key, LakeEntry(dataclasses.replace(manifest, month=f"{month:%Y-%m}"), fingerprints))
    zones = canonical_key(ZONES, None)
    manifest = to_canonical_parquet(REPO / "tests/data/taxi_zone_lookup.csv", lake.local_path(zones), dataset=ZONES,
                                    month=None, source_url="x")  # fmt: skip
    lake.write_entry(zones, LakeEntry(manifest, fingerprints_of(lake.local_path(zones))))
    config = write_config(tmp_path / "luigi.cfg", pipeline_settings(server, tmp_path / "lake"))
    return config, newest, months


def expected(months: dict[str, list]) -> dict[str, dict[str, int]]:
    """Months per service and state, in every sink: the newest month is to run for fhvhv (the source has it) and
    not published yet for the others; GAP is missing."""
    found = {}
    for name, asked in months.items():
        counts = Counter({"done": len(asked) - 1, "missing" if name == "fhvhv" else "not published yet": 1})
        if name == GAP[0]:
            counts.update({"done": -1, "missing": 1})
        found[name] = dict(counts)
    return found


def test_status_and_dry_run_over_the_whole_history(whole_history):
    config, newest, months = whole_history
    assert sum(map(len, months.values())) > 600
    status = luigi_command(["all", "2009-01", "latest", "--json"], config, [str(REPO / "bin/status")])
    assert status.returncode == 0, status.stderr
    machine = json.loads(status.stdout)
    assert (machine["start"], machine["stop"]) == ("2009-01", f"{newest:%Y-%m}")
    by_service = {name: dict(Counter(m["sinks"]["lake"] for m in machine["months"] if m["service"] == name))
                  for name in SERVICES}  # fmt: skip
    assert by_service == expected(months)
    assert [m["month"] for m in machine["months"] if m["service"] == "yellow"] == [
        f"{m:%Y-%m}" for m in months["yellow"]
    ]

    dry = luigi_command(["all", "2009-01", "latest", "--dry-run"], config, [str(REPO / "bin/backfill")])
    assert dry.returncode == 0, dry.stderr
    last, before = (f"{m:%Y-%m}" for m in months["yellow"][:-3:-1])
    count = {name: len(asked) - 1 for name, asked in months.items()}
    assert dry.stdout.splitlines()[1:] == [
        f"yellow: {count['yellow']} done 2009-01..{before}",
        "yellow: 0 to run",
        f"yellow: not published yet: {last}",
        f"green: {count['green'] - 1} done 2014-01..2015-05, 2015-07..{before}",
        "green: 1 to run 2015-06",
        "    into lake: 2015-06",
        f"green: not published yet: {last}",
        "green: skipped, not published by the TLC: 2009-01..2013-12",
        f"fhv: {count['fhv']} done 2015-01..{before}",
        "fhv: 0 to run",
        f"fhv: not published yet: {last}",
        "fhv: skipped, not published by the TLC: 2009-01..2014-12",
        f"fhvhv: {count['fhvhv']} done 2019-02..{before}",
        f"fhvhv: 1 to run {last}",
        f"    into lake: {last}",
        "fhvhv: skipped, not published by the TLC: 2009-01..2019-01",
    ]


# Added to a copy of the page (which has no script of its own): the widths the browser laid it out in.
MEASURE = (
    "<script>addEventListener('load', () => { document.body.dataset.widths = "
    "document.documentElement.scrollWidth + ' ' + window.innerWidth; });</script></body>"
)


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (.ci/run installs it)")
def test_the_whole_history_fits_the_screen(whole_history, tmp_path):
    config, _, months = whole_history
    page = tmp_path / "status.html"
    args = ["all", "2009-01", "latest", "--sinks", "lake,duckdb", "--html", str(page)]
    assert luigi_command(args, config, [str(REPO / "bin/status")]).returncode == 0
    assert page.read_text().count("data-state=") == 2 * sum(map(len, months.values()))  # every month, both sinks
    measured = tmp_path / "measured.html"
    measured.write_text(page.read_text().replace("</body>", MEASURE))
    dom = chromium("--dump-dom", "--window-size=1280,800", measured.as_uri(), profile=tmp_path / "profile")
    assert dom.returncode == 0, dom.stderr
    scroll_width, inner_width = map(int, re.search(r'data-widths="(\d+) (\d+)"', dom.stdout).groups())
    assert inner_width == 1280
    assert scroll_width <= inner_width  # no scrolling sideways
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "status.png"
    shot.unlink(missing_ok=True)
    chromium(f"--screenshot={shot}", "--window-size=1280,1800", page.as_uri(), profile=tmp_path / "profile")
    assert shot.stat().st_size > 10_000
