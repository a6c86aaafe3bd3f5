"""Progress in the terminal of a local-scheduler run: redrawn in place on a TTY, plain lines for cron."""

from __future__ import annotations

import gzip
import os
import pty
import re
import subprocess
import sys
from pathlib import Path

import pytest

from luigi_tasks.catalog import YELLOW
from luigi_tasks.synthetic import write_trip_csv
from tests.conftest import REPO, command_env, month, pipeline_settings, serve_csv_month, serve_zones, write_config

COMMAND = ["--module", "luigi_tasks", "ToParquet", "--service", "yellow", "--month", "2021-01", "--local-scheduler"]


@pytest.fixture
def month_served(server, tmp_path) -> Path:
    """A 300,000-row month (about 10 MiB of csv.gz: several download chunks and row groups), and a config."""
    csv = write_trip_csv(tmp_path / "trips.csv", YELLOW, month("2021-01"), 300_000, seed=5)
    serve_csv_month(server, "yellow", "2021-01", csv.read_bytes())
    serve_zones(server)  # every conversion checks location ids against the lake's zone lookup
    assert len(gzip.compress(csv.read_bytes())) > 3 * 2**20
    return tmp_path


def _config(folder: Path, server, interval: str) -> Path:
    settings = pipeline_settings(server, folder / "lake")
    settings[("progress", "interval")] = interval
    return write_config(folder / "luigi.cfg", settings)


def _luigi() -> str:
    return str(Path(sys.executable).with_name("luigi"))


def test_a_terminal_sees_each_step_redrawn_in_place(month_served, server):
    config = _config(month_served, server, "30")
    leader, follower = pty.openpty()
    child = subprocess.Popen(
        [_luigi(), *COMMAND], cwd=REPO, env=command_env(config), stdin=subprocess.DEVNULL, stdout=follower,
        stderr=follower,
    )  # fmt: skip
    os.close(follower)
    output = b""
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        output += chunk
    assert child.wait(timeout=120) == 0
    text = output.decode()
    assert "\r\x1b[KDownloadTripData yellow 2021-01: " in text
    downloads = [part.split("\r")[0] for part in text.split("\r\x1b[KDownloadTripData yellow 2021-01: ")[1:]]
    assert len(downloads) >= 3 and downloads[-1].split(",")[0].endswith("MiB (100%)")
    conversions = [part.split("\r")[0] for part in text.split("\r\x1b[KToParquet yellow 2021-01: ")[1:]]
    # Rows converted so far (a CSV's row count is not known before its end), at most once a second.
    assert conversions and all(re.match(r"^\d{1,3}(,\d{3})* rows\b", c) for c in conversions)
    # Each redrawn line is taken away when its task ends, so luigi's next log line starts on a clean line.
    assert "\r\x1b[K\r\n" not in text and text.count("\r\x1b[K") > len(downloads) + len(conversions)


def test_cron_gets_plain_lines_every_interval_and_none_for_a_quick_run(month_served, server):
    quick = subprocess.run(
        [_luigi(), *COMMAND], cwd=REPO, env=command_env(_config(month_served, server, "30")), capture_output=True,
        text=True, timeout=120,
    )  # fmt: skip
    assert quick.returncode == 0, quick.stderr
    assert "\x1b[K" not in quick.stderr and "DownloadTripData yellow 2021-01: " not in quick.stderr

    for path in (month_served / "lake").rglob("*"):
        if path.is_file():
            path.unlink()
    every = subprocess.run(
        [_luigi(), *COMMAND], cwd=REPO, env=command_env(_config(month_served, server, "0")), capture_output=True,
        text=True, timeout=120,
    )  # fmt: skip
    assert every.returncode == 0, every.stderr
    lines = every.stderr.splitlines()
    downloads = [line for line in lines if line.startswith("DownloadTripData yellow 2021-01: ")]
    conversions = [line for line in lines if line.startswith("ToParquet yellow 2021-01: ")]
    assert len(downloads) >= 3 and " MiB (100%)" in downloads[-1]
    assert conversions and all(re.match(r"^\d{1,3}(,\d{3})* rows\b", c.split(": ", 1)[1]) for c in conversions)
    assert "\x1b[K" not in every.stderr
