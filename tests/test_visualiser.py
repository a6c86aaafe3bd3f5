"""Luigi's visualiser, served by our luigid, in a real headless Chromium: the tasks of a run are on the page."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from tests.conftest import DATA, REPO, luigi_command, pipeline_settings, serve_csv_month, serve_zones, write_config
from tests.test_scheduler import luigid  # noqa: F401 - the fixture

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARTIFACTS = REPO / "test-artifacts"


def chromium(*args: str, profile) -> subprocess.CompletedProcess:
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={profile}",
             "--virtual-time-budget=10000"]  # fmt: skip
    return subprocess.run([CHROMIUM, *flags, *args], capture_output=True, text=True, timeout=120)


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (.ci/run installs it)")
def test_visualiser_shows_the_tasks_of_a_run(tmp_path, server, luigid):  # noqa: F811
    serve_csv_month(server, "yellow", "2020-07", (DATA / "yellow_tripdata_2020-07_head266.csv").read_bytes())
    serve_zones(server)
    config = write_config(tmp_path / "luigi.cfg", pipeline_settings(server, tmp_path / "lake"))
    args = ["yellow", "2020-07", "--scheduler-host", "127.0.0.1", "--scheduler-port", str(luigid)]
    assert luigi_command(args, config, program=[str(REPO / "bin/ingest-month")]).returncode == 0

    page = f"http://127.0.0.1:{luigid}/static/visualiser/index.html"
    dom = chromium("--dump-dom", page, profile=tmp_path / "profile").stdout
    for task in ("IngestMonth(month=2020-07, service=yellow, sinks=lake)", "ToParquet(month=2020-07, service=yellow)",
                 "DownloadTripData(month=2020-07, service=yellow)", "ZonesToParquet()"):  # fmt: skip
        assert task in dom, task
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "visualiser.png"
    chromium(f"--screenshot={shot}", "--window-size=1400,900", page, profile=tmp_path / "profile")
    assert shot.stat().st_size > 10_000
