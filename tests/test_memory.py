"""Peak memory does not grow with the month: a TLC-shaped Parquet month of 6 Mi rows against one of 2 Mi rows.

Each step runs in a fresh process (so its peak RSS is its own) on an fhvhv month typed as the TLC's 2023+ files
(large_string, int32 ids, timestamp[us]) in the TLC's 1 Mi-row groups. While the reader pre-buffered (pyarrow's
default), each row group read added about 50 MB to the conversion's peak and the PostgreSQL load's: 4 more row
groups put the larger month some 200 MB above the smaller. Both sizes are past the first row groups, where the
allocators warm up. bench/big_month_bench.py measures the same at 6M and 24M rows.
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from pathlib import Path

import pytest

from luigi_tasks.synthetic import write_fhvhv_tlc_parquet

MONTH = dt.date(2023, 3, 1)
SMALL, LARGE = 2 << 20, 6 << 20
ALLOWED_GROWTH = 0.10  # of the smaller month's peak

_STEP = """
import datetime as dt, json, sys
from pathlib import Path
from luigi_tasks.catalog import FHVHV
step, source, target = sys.argv[1:4]
month = dt.date(2023, 3, 1)
if step == "convert":
    from luigi_tasks.convert import to_canonical_parquet
    rows = to_canonical_parquet(Path(source), Path(target), dataset=FHVHV, month=month, source_url="http://x/f").rows_out
elif step == "postgres":
    from luigi_tasks.postgres import load_month
    rows = load_month(target, Path(source), dataset=FHVHV, month=month, marker_table="table_updates")
else:
    from luigi_tasks.duckdb import Warehouse, load
    warehouse = Warehouse(Path(target), "prod", "table_updates", memory_limit="200MB")
    rows = load(warehouse, Path(source), dataset=FHVHV, table="fhvhv_tripdata", month=month, lake_file="f")
# VmHWM: this program's own peak RSS (ru_maxrss would include the RSS of the process that started it)
peak_kb = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(json.dumps({"rows": rows, "peak_mb": peak_kb / 1024}))
"""


def peak_rss_mb(step: str, source: Path, target: str) -> tuple[int, float]:
    """Run one step in a child process; its row count and peak RSS in MB."""
    child = subprocess.Popen(
        [sys.executable, "-c", _STEP, step, str(source), target], stdout=subprocess.PIPE, text=True
    )
    output, _ = child.communicate()
    assert child.returncode == 0, f"{step} failed"
    reported = json.loads(output.splitlines()[-1])  # the last line: a step may print before it
    return reported["rows"], reported["peak_mb"]


@pytest.fixture(scope="module")
def months(tmp_path_factory) -> dict[int, Path]:
    folder = tmp_path_factory.mktemp("big")
    return {
        rows: write_fhvhv_tlc_parquet(folder / f"fhvhv_{rows}.parquet", MONTH, rows, seed=rows)
        for rows in (SMALL, LARGE)
    }


@pytest.fixture(scope="module")
def converted(months, tmp_path_factory) -> dict[int, tuple[Path, float]]:
    folder = tmp_path_factory.mktemp("lake")
    out = {}
    for rows, source in months.items():
        target = folder / f"fhvhv_{rows}.parquet"
        counted, peak = peak_rss_mb("convert", source, str(target))
        assert counted == rows
        out[rows] = (target, peak)
    return out


def test_conversion_of_a_tlc_parquet_month_is_flat_in_memory(converted):
    small, large = converted[SMALL][1], converted[LARGE][1]
    assert large <= small * (1 + ALLOWED_GROWTH), (
        f"peak RSS {small:.0f} MB at {SMALL:,} rows, {large:.0f} MB at {LARGE:,}"
    )


def test_postgres_load_is_flat_in_memory(converted, pg_dsn):
    peaks = {}
    for rows, (lake_file, _) in converted.items():
        counted, peaks[rows] = peak_rss_mb("postgres", lake_file, pg_dsn)
        assert counted == rows
    assert peaks[LARGE] <= peaks[SMALL] * (1 + ALLOWED_GROWTH), (
        f"peak RSS {peaks[SMALL]:.0f} MB at {SMALL:,} rows, {peaks[LARGE]:.0f} MB"
    )


def test_duckdb_load_stays_within_its_memory_limit(converted, tmp_path):
    # memory_limit 200MB: the process's peak stays within the limit plus the margin docs/ state (at most 300 MB; the
    # runs measured 230-250 MB, the process itself, pyarrow and DuckDB's allocations outside its buffer manager), and
    # does not grow with the month.
    peaks = {}
    for rows, (lake_file, _) in converted.items():
        counted, peaks[rows] = peak_rss_mb("duckdb", lake_file, str(tmp_path / f"w{rows}.duckdb"))
        assert counted == rows
        assert peaks[rows] <= 200 + 300, f"peak RSS {peaks[rows]:.0f} MB at {rows:,} rows with memory_limit 200MB"
    assert peaks[LARGE] <= peaks[SMALL] * (1 + ALLOWED_GROWTH), f"peak RSS {peaks[SMALL]:.0f} MB, {peaks[LARGE]:.0f} MB"
