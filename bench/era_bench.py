"""The zone lookup's cost: a yellow month laid out as the TLC's 2009 files (coordinates, no zone ids) converts
against the same rows with zone ids in the file (no lookup), at two sizes, each conversion a fresh process.

The inputs are seeded (luigi_tasks.synthetic.write_yellow_2009_parquet: text times, vendor and payment names,
points mostly in Manhattan, some at the airports, 2% at 0,0), in row groups of 1 Mi rows; the "without lookup"
file holds the same columns plus PULocationID and DOLocationID, so the only difference is the lookup. Each
conversion is `to_canonical_parquet` in its own interpreter; its peak RSS is its own VmHWM. Runs are interleaved
and repeated; the report gives the median time and the largest peak RSS.

    python bench/era_bench.py                          # 14,000,000 and 3,500,000 rows, 3 rounds
    python bench/era_bench.py --write-docs             # ... and write docs/era-benchmark.md
    python bench/era_bench.py --rows 400000 --small-rows 100000 --repeat 1   # a quick trial
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from common import REPO, SEED, WORK_DIR, child_library_versions, machine, maxrss_mb, run_stamp, script_command, verdict

MONTH = "2009-01"
GOAL = 1.5  # a coordinate-era month within 1.5x of the same rows without the lookup
_CONVERT = """
import datetime as dt, json, sys, time
from pathlib import Path
from luigi_tasks.catalog import YELLOW
from luigi_tasks.convert import to_canonical_parquet
started = time.perf_counter()
m = to_canonical_parquet(Path(sys.argv[1]), Path(sys.argv[2]), dataset=YELLOW, month=dt.date(2009, 1, 1),
                         source_url="file://bench")
wall = time.perf_counter() - started
peak = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(json.dumps({"rows": m.rows_out, "wall": wall, "peak_mb": peak / 1024, "zones": m.zones_not_found}))
"""


def input_path(work: Path, rows: int, with_zone_ids: bool) -> Path:
    return work / f"yellow-{MONTH}-{rows}r-seed{SEED}{'-zone-ids' if with_zone_ids else ''}.parquet"


def ensure_input(path: Path, rows: int, with_zone_ids: bool) -> None:
    if path.exists():
        return
    print(f"generating {path.name} ...", file=sys.stderr, flush=True)
    flag = ["--with-zone-ids"] if with_zone_ids else []
    subprocess.run(script_command(__file__, "--generate", str(path), str(rows), *flag), cwd=REPO, check=True)


def generate(path: Path, rows: int, with_zone_ids: bool) -> None:
    import datetime as dt

    from luigi_tasks.synthetic import write_yellow_2009_parquet

    part = path.with_name(f".part-{os.getpid()}-{path.name}")
    try:
        write_yellow_2009_parquet(part, dt.date(2009, 1, 1), rows, seed=SEED, with_zone_ids=with_zone_ids)
        os.replace(part, path)
    finally:
        part.unlink(missing_ok=True)


def convert(source: Path, work: Path) -> dict:
    """One conversion in a fresh interpreter: its rows, wall time (of the conversion itself and of the whole
    process, start-up and the zones' grid included) and peak RSS."""
    out = work / "out.parquet"
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", _CONVERT, str(source), str(out)], cwd=REPO, capture_output=True,
                          text=True, check=True)  # fmt: skip
    figures = json.loads(done.stdout.splitlines()[-1])
    figures["process"] = time.perf_counter() - started
    out.unlink(missing_ok=True)
    return figures


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=14_000_000)
    parser.add_argument("--small-rows", type=int, default=3_500_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--work", type=Path, default=WORK_DIR)
    parser.add_argument("--write-docs", action="store_true")
    parser.add_argument("--generate", nargs=2, metavar=("PATH", "ROWS"), help=argparse.SUPPRESS)
    parser.add_argument("--with-zone-ids", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--versions", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.generate:
        generate(Path(args.generate[0]), int(args.generate[1]), args.with_zone_ids)
        return 0
    if args.versions:
        import pyarrow
        import pyproj
        import shapely

        print(json.dumps({"python": sys.version.split()[0], "pyarrow": pyarrow.__version__,
                          "shapely": shapely.__version__, "pyproj": pyproj.__version__}))  # fmt: skip
        return 0
    args.work.mkdir(parents=True, exist_ok=True)
    sizes = [args.rows, args.small_rows]
    for rows in sizes:
        for with_ids in (False, True):
            ensure_input(input_path(args.work, rows, with_ids), rows, with_ids)
    load_start = os.getloadavg()[0]
    runs: dict[tuple[int, str], list[dict]] = {}
    for _ in range(args.repeat):
        for rows in sizes:
            for method, with_ids in (("with the zone lookup", False), ("zone ids in the file", True)):
                figures = convert(input_path(args.work, rows, with_ids), args.work)
                assert figures["rows"] == rows
                runs.setdefault((rows, method), []).append(figures)
                print(f"{rows:,} {method}: {figures['wall']:.2f} s, {figures['peak_mb']:.0f} MB", file=sys.stderr)
    load_end = os.getloadavg()[0]
    lines = ["| rows | conversion | wall (median) | whole process | peak RSS | ratio |", "|---|---|---|---|---|---|"]
    medians = {key: statistics.median(r["wall"] for r in found) for key, found in runs.items()}
    peaks = {key: max(r["peak_mb"] for r in found) for key, found in runs.items()}
    for rows in sizes:
        for method in ("with the zone lookup", "zone ids in the file"):
            key = (rows, method)
            process = statistics.median(r["process"] for r in runs[key])
            ratio = medians[key] / medians[(rows, "zone ids in the file")]
            lines.append(f"| {rows:,} | {method} | {medians[key]:.2f} s | {process:.2f} s | {peaks[key]:.0f} MB |"
                         f" {ratio:.2f}x |")  # fmt: skip
    big, small = (args.rows, "with the zone lookup"), (args.small_rows, "with the zone lookup")
    ratio = medians[big] / medians[(args.rows, "zone ids in the file")]
    zones = runs[big][0]["zones"]
    goals = [
        f"- a coordinate-era month within {GOAL}x of the same rows without the lookup: {ratio:.2f}x at"
        f" {args.rows:,} rows, {verdict(ratio <= GOAL)}",
        f"- memory flat: {peaks[big]:.0f} MB at {args.rows:,} rows against {peaks[small]:.0f} MB at"
        f" {args.small_rows:,}, {verdict(peaks[big] <= peaks[small] * 1.1)}",
        f"- zone ids NULL at {args.rows:,} rows: {json.dumps(zones)}",
        f"- load average: {load_start:.2f} at the start, {load_end:.2f} at the end (2 cores)",
    ]
    table = "\n".join(lines + [""] + goals)
    print(table)
    if args.write_docs:
        stamp = run_stamp()
        versions = child_library_versions(__file__)
        host = machine(maxrss_mb())
        text = [
            "# The zone lookup of 2009-2010: benchmark",
            "",
            "Generated by `python bench/era_bench.py --write-docs`; see the script's docstring for the method.",
            f"Run {stamp['date']} at commit {stamp['commit']}; "
            + ", ".join(f"{k} {v}" for k, v in versions.items())
            + "; "
            + ", ".join(f"{k}: {v}" for k, v in host.items())
            + ".",
            "",
            table,
            "",
        ]
        (REPO / "docs" / "era-benchmark.md").write_text("\n".join(text))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
