"""Wall time and peak RSS of turning a yellow-taxi CSV into Parquet, ToParquet against the usual ways.

Methods compared, on the same seeded inputs:

  luigi     luigi_tasks.convert.to_canonical_parquet, what the ToParquet task runs (streaming)
  zoomcamp  pyarrow.csv.read_csv of the whole file, then pyarrow.parquet.write_table
            (the DataTalksClub zoomcamp DAG's format_to_parquet)
  zoomcamp-system  the same with Arrow's system allocator instead of its default (mimalloc)
  pandas    pandas.read_csv, then DataFrame.to_parquet (pyarrow engine)
  duckdb    DuckDB's COPY (SELECT * FROM read_csv(...)) TO ... (FORMAT parquet)
  polars    polars.scan_csv(...).sink_parquet(...) (streaming)

Every (method, input) measurement runs in a fresh interpreter, so the peak RSS is that method's
alone: the parent reads it from os.wait4. The child times the conversion itself (after imports);
the parent also times the whole process. Measurements are repeated and interleaved round-robin;
the report gives the median wall time and the largest peak RSS.

    python bench/convert_bench.py                  # 1x and 5x yellow 2021-01, .csv and .csv.gz, 3 repeats
    python bench/convert_bench.py --write-docs     # ... and rewrite docs/benchmarks.md
    python bench/convert_bench.py --one luigi bench/out/yellow-2021-01-1369765r-seed1.csv   # one measurement
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import os
import shlex
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from common import (
    MB,
    MONTH,
    REPO,
    WORK_DIR,
    YELLOW_2021_01_ROWS,
    child_library_versions,
    data_library_versions,
    ensure_input,
    generate_input,
    input_path,
    machine,
    maxrss_mb,
    run_stamp,
    script_command,
    verdict,
    wait_child,
    warm_page_cache,
)

DOCS_PATH = REPO / "docs" / "benchmarks.md"

METHODS = {
    "luigi": "luigi_tasks ToParquet",
    "zoomcamp": "zoomcamp way",
    "zoomcamp-system": "zoomcamp way, system allocator",
    "pandas": "pandas",
    "duckdb": "DuckDB COPY",
    "polars": "polars sink_parquet",
}
# The goal is judged against the faster of the two: on a host whose memory is fragmented, Arrow's default allocator
# (mimalloc) can spend seconds in the kernel faulting in the zoomcamp way's 600 MB, which is the host's doing.
BASELINES = ("zoomcamp", "zoomcamp-system")
SUBJECT = "luigi"

GOAL_WALL_RATIO = 0.8
GOAL_RSS_MB = 300.0
# "The same RSS for the 5x file": the 5x peak may exceed the 1x peak by at most this share.
GOAL_RSS_GROWTH = 0.10


# --- the child: one conversion in a fresh interpreter -------------------------------------------------------------


def _prepare_luigi(src: Path, dest: Path) -> Callable[[], None]:
    from luigi_tasks.catalog import YELLOW
    from luigi_tasks.convert import to_canonical_parquet

    def run() -> None:
        to_canonical_parquet(src, dest, dataset=YELLOW, month=MONTH, source_url="file://bench")

    return run


def _prepare_zoomcamp(src: Path, dest: Path, *, system_allocator: bool = False) -> Callable[[], None]:
    import pyarrow as pa
    import pyarrow.csv as pv
    import pyarrow.parquet as pq

    if system_allocator:
        pa.set_memory_pool(pa.system_memory_pool())

    def run() -> None:
        table = pv.read_csv(str(src))
        pq.write_table(table, str(dest))

    return run


def _prepare_pandas(src: Path, dest: Path) -> Callable[[], None]:
    import pandas as pd

    def run() -> None:
        df = pd.read_csv(src)
        df.to_parquet(dest, engine="pyarrow")

    return run


def _prepare_duckdb(src: Path, dest: Path) -> Callable[[], None]:
    import duckdb

    connection = duckdb.connect()

    def run() -> None:
        connection.execute(f"COPY (SELECT * FROM read_csv('{src}')) TO '{dest}' (FORMAT parquet)")

    return run


def _prepare_polars(src: Path, dest: Path) -> Callable[[], None]:
    import polars as pl

    def run() -> None:
        pl.scan_csv(src).sink_parquet(dest)

    return run


PREPARE: dict[str, Callable[[Path, Path], Callable[[], None]]] = {
    "luigi": _prepare_luigi,
    "zoomcamp": _prepare_zoomcamp,
    "zoomcamp-system": functools.partial(_prepare_zoomcamp, system_allocator=True),
    "pandas": _prepare_pandas,
    "duckdb": _prepare_duckdb,
    "polars": _prepare_polars,
}


def run_one(method: str, src: Path, dest: Path, expect_rows: int | None) -> dict:
    """Convert `src` into `dest` with `method` in this process; return the child's own measurements."""
    dest.unlink(missing_ok=True)
    started = time.perf_counter()
    convert = PREPARE[method](src, dest)
    import_s = time.perf_counter() - started
    rss_after_import_mb = maxrss_mb()

    started = time.perf_counter()
    convert()
    wall_s = time.perf_counter() - started
    rss_mb = maxrss_mb()

    import pyarrow.parquet as pq

    rows = pq.read_metadata(dest).num_rows
    if expect_rows is not None and rows != expect_rows:
        raise SystemExit(f"{METHODS[method]}: {dest} holds {rows:,} rows, {src} has {expect_rows:,}")
    return {
        "wall_s": wall_s,
        "import_s": import_s,
        "rss_after_import_mb": rss_after_import_mb,
        "self_rss_mb": rss_mb,
        "rows": rows,
        "output_bytes": dest.stat().st_size,
    }


# --- inputs --------------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Input:
    path: Path
    rows: int
    scale: int

    @property
    def label(self) -> str:
        suffix = ".csv.gz" if self.path.name.endswith(".gz") else ".csv"
        return f"{self.scale}x {suffix}"

    @property
    def megabytes(self) -> float:
        return self.path.stat().st_size / MB


# --- the parent: many children, round-robin ------------------------------------------------------------------------
#
# On Linux a child's ru_maxrss starts at its parent's high-water mark: fork (or vfork) and exec carry it over. So the
# parent never imports pyarrow, pandas or numpy and never holds data; what needs them (generating the inputs, reading
# library versions) runs in a child of its own. main() checks that the parent's peak stays below every child's RSS
# after imports, so that no child's peak is masked by the parent's.


@dataclasses.dataclass
class Run:
    method: str
    input: Input
    wall_s: float
    process_wall_s: float
    rss_mb: float
    rss_after_import_mb: float
    output_bytes: int


def measure(method: str, item: Input, work: Path) -> Run:
    """Run one conversion in a fresh interpreter; peak RSS comes from os.wait4 on the child."""
    dest = work / f"{method}-{item.path.name.split('.')[0]}-{'gz' if item.path.name.endswith('.gz') else 'csv'}.parquet"
    command = script_command(
        __file__, "--one", method, str(item.path), "--dest", str(dest), "--expect-rows", str(item.rows)
    )
    started = time.perf_counter()
    child = subprocess.Popen(command, stdout=subprocess.PIPE, cwd=REPO, text=True)
    output, returncode, usage = wait_child(child)
    process_wall_s = time.perf_counter() - started
    if returncode != 0:
        raise SystemExit(f"{METHODS[method]} on {item.path.name} failed (exit {returncode}); see stderr above")
    result = json.loads(output.strip().splitlines()[-1])
    if result["rows"] != item.rows:  # the child checks too; this guards the check itself
        raise SystemExit(f"{METHODS[method]} on {item.path.name}: {result['rows']:,} rows out, {item.rows:,} in")
    return Run(
        method=method,
        input=item,
        wall_s=result["wall_s"],
        process_wall_s=process_wall_s,
        rss_mb=usage.ru_maxrss / 1024,
        rss_after_import_mb=result["rss_after_import_mb"],
        output_bytes=result["output_bytes"],
    )


@dataclasses.dataclass
class Summary:
    method: str
    input: Input
    wall_s: float  # median
    wall_min_s: float
    wall_max_s: float
    process_wall_s: float  # median
    rss_mb: float  # max
    rss_after_import_mb: float  # median
    output_mb: float
    runs: int
    wall_ratio: float = float("nan")
    rss_ratio: float = float("nan")


def summarise(runs: list[Run]) -> list[Summary]:
    groups: dict[tuple[Path, str], list[Run]] = {}
    for run in runs:
        groups.setdefault((run.input.path, run.method), []).append(run)
    summaries = []
    for group in groups.values():
        walls = [r.wall_s for r in group]
        summaries.append(
            Summary(
                method=group[0].method,
                input=group[0].input,
                wall_s=statistics.median(walls),
                wall_min_s=min(walls),
                wall_max_s=max(walls),
                process_wall_s=statistics.median(r.process_wall_s for r in group),
                rss_mb=max(r.rss_mb for r in group),
                rss_after_import_mb=statistics.median(r.rss_after_import_mb for r in group),
                output_mb=group[-1].output_bytes / MB,
                runs=len(group),
            )
        )
    baselines: dict[Path, Summary] = {}
    for s in summaries:
        if s.method in BASELINES and (s.input.path not in baselines or s.wall_s < baselines[s.input.path].wall_s):
            baselines[s.input.path] = s
    for summary in summaries:
        baseline = baselines.get(summary.input.path)
        if baseline:
            summary.wall_ratio = summary.wall_s / baseline.wall_s
            summary.rss_ratio = summary.rss_mb / baseline.rss_mb
    return summaries


def _ratio(value: float) -> str:
    return "–" if value != value else f"{value:.2f}x"


def results_table(summaries: list[Summary]) -> str:
    header = (
        "| input | method | wall s (median) | wall s (min–max) | process wall s | peak RSS MB (max)"
        " | RSS after imports MB | wall vs zoomcamp (faster) | RSS vs the same | Parquet MB |"
    )
    lines = [header, "|" + "---|" * 10]
    for s in summaries:
        item = f"{s.input.label} ({s.input.rows:,} rows, {s.input.megabytes:,.0f} MB)"
        lines.append(
            f"| {item} | {METHODS[s.method]} | {s.wall_s:.2f} | {s.wall_min_s:.2f}–{s.wall_max_s:.2f}"
            f" | {s.process_wall_s:.2f} | {s.rss_mb:,.0f} | {s.rss_after_import_mb:,.0f}"
            f" | {_ratio(s.wall_ratio)} | {_ratio(s.rss_ratio)} | {s.output_mb:,.1f} |"
        )
    return "\n".join(lines)


def goal_checks(summaries: list[Summary]) -> list[str]:
    """One line per goal and input: the measured value and whether the goal is met."""
    subject = [s for s in summaries if s.method == SUBJECT]
    lines = []
    for s in subject:
        if s.wall_ratio == s.wall_ratio:
            lines.append(
                f"- {s.input.label}: wall {_ratio(s.wall_ratio)} the zoomcamp way"
                f" (goal ≤ {GOAL_WALL_RATIO:.1f}x): {verdict(s.wall_ratio <= GOAL_WALL_RATIO)}"
            )
        lines.append(
            f"- {s.input.label}: peak RSS {s.rss_mb:,.0f} MB (goal ≤ {GOAL_RSS_MB:.0f} MB):"
            f" {verdict(s.rss_mb <= GOAL_RSS_MB)}"
        )
    by_key = {(s.input.scale, s.input.path.name.endswith(".gz")): s for s in subject}
    for (scale, gz), big in sorted(by_key.items()):
        small = by_key.get((1, gz))
        if scale == 1 or small is None:
            continue
        growth = big.rss_mb / small.rss_mb - 1
        lines.append(
            f"- {big.input.label} vs {small.input.label}: peak RSS {big.rss_mb:,.0f} MB vs {small.rss_mb:,.0f} MB"
            f" ({growth:+.0%}; goal: the same, within {GOAL_RSS_GROWTH:.0%}): {verdict(growth <= GOAL_RSS_GROWTH)}"
        )
    return lines


# --- environment and docs ------------------------------------------------------------------------------------------


def library_versions() -> dict[str, str]:
    import duckdb
    import polars
    import pyarrow

    return {
        **data_library_versions(),
        "duckdb": duckdb.__version__,
        "polars": polars.__version__,
        "arrow memory pool": pyarrow.default_memory_pool().backend_name,
    }


def environment(parent_rss_mb: float, load_at_start: float) -> dict[str, str]:
    # Other jobs on the machine slow the parallel methods most: the load says how quiet the run was.
    load = f"{load_at_start:.1f} at the start, {os.getloadavg()[0]:.1f} at the end (on {os.cpu_count()} cores)"
    return {
        **run_stamp(),
        **child_library_versions(__file__),
        **machine(parent_rss_mb),
        "load average (1 minute)": load,
    }


def docs_text(summaries: list[Summary], command: str, env: dict[str, str], args: argparse.Namespace) -> str:
    sizes = f"{args.rows:,} rows"
    if args.rows == YELLOW_2021_01_ROWS:
        sizes += " (as many as yellow 2021-01)"
    if args.scale > 1:
        sizes += f" and {args.scale} times that"
    repeats = "once" if args.repeat == 1 else f"{args.repeat} times"
    env_lines = "\n".join(f"- {key}: {value}" for key, value in env.items())
    return f"""# Benchmarks

## CSV to Parquet: ToParquet against the usual ways

Converting one month of yellow-taxi trips from CSV to Parquet, five ways (one of them twice):

- **luigi_tasks ToParquet**: `luigi_tasks.convert.to_canonical_parquet`, what the `ToParquet` task runs. It inflates a
  `.csv.gz` with ISA-L (`isal`), parses the CSV in pieces cut at line ends, on all cores while the previous piece
  is encoded, casts to the catalogue's schema, counts the quality checks, writes zstd row groups of 131,072 rows
  with jemalloc as Arrow's allocator, computes the source's SHA-256 and records a manifest in the footer, then
  fsyncs and renames the file into place.
- **zoomcamp way**: `pyarrow.csv.read_csv` of the whole file, then `pyarrow.parquet.write_table` (pyarrow's
  defaults: inferred types, snappy), which is what the DataTalksClub data-engineering zoomcamp DAG's
  `format_to_parquet` does. (That DAG accepts only `.csv`; pyarrow reads the `.csv.gz` inputs all the same.)
  It runs twice: with pyarrow's default allocator (mimalloc), as a user gets it, and with the system allocator.
  On a host whose memory has been fragmented by hours of work, mimalloc can spend seconds in the kernel faulting in
  the 600 MB this way holds; the system allocator does not. Ratios compare with the faster of the two, so a slow
  host cannot flatter ToParquet. (ToParquet itself uses jemalloc, which Arrow also ships: about 10% faster and
  40 MB lower than mimalloc for it.)
- **pandas**: `pandas.read_csv`, then `DataFrame.to_parquet` with the pyarrow engine.
- **DuckDB COPY**: `COPY (SELECT * FROM read_csv('...')) TO '...' (FORMAT parquet)` in an in-memory DuckDB
  (its defaults: sniffed types, snappy, all cores).
- **polars sink_parquet**: `polars.scan_csv(...).sink_parquet(...)`, polars' streaming engine (its defaults:
  inferred types, times left as text, zstd).

### Goals

ToParquet should take at most {GOAL_WALL_RATIO:.1f}x the zoomcamp way's wall time, peak at no more than
{GOAL_RSS_MB:.0f} MB of resident memory, and keep the same peak on a file five times larger: its memory is bounded
by a row group and the reader's blocks, not by the size of the month.

### Results

Inputs are seeded files from `luigi_tasks.synthetic.write_trip_csv` with the 18-column 2019-2021 yellow header:
{sizes}, each as `.csv` and `.csv.gz`. Each measurement runs
in a fresh Python process, so the peak RSS (`ru_maxrss` of the child, from `os.wait4`) belongs to one method only;
it includes the interpreter and the method's imports (the "RSS after imports" column). "Wall" is the conversion
alone, timed inside the child after its imports; "process wall" is the whole child process, start-up included.
Each measurement was made {repeats}, the methods interleaved round-robin; the table gives the median wall
time and the largest peak RSS. Ratios compare with the faster zoomcamp row on the same input. Inputs are read once
before timing, so every method finds them in the page cache. Every output's row count is checked against the input's.

{results_table(summaries)}

{chr(10).join(goal_checks(summaries))}

### How to reproduce

```
{command}
```

The inputs are cached in `bench/out/` (not tracked) and generated again only when missing; see `bench/README.md`.

### Environment

{env_lines}
"""


# --- command line --------------------------------------------------------------------------------------------------


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=YELLOW_2021_01_ROWS, help="rows of the 1x input")
    parser.add_argument("--scale", type=int, default=5, help="the large input has SCALE times the rows (1: none)")
    parser.add_argument("--repeat", type=int, default=3, help="measurements per method and input")
    parser.add_argument("--methods", default=",".join(METHODS), help=f"comma-separated subset of: {', '.join(METHODS)}")
    parser.add_argument("--skip-pandas-5x", action="store_true", help="do not run pandas on the large input")
    parser.add_argument("--work", type=Path, default=WORK_DIR, help="where inputs and outputs go")
    parser.add_argument("--write-docs", action="store_true", help=f"rewrite {DOCS_PATH.relative_to(REPO)}")
    parser.add_argument("--one", nargs=2, metavar=("METHOD", "FILE"), help="run one conversion in this process")
    parser.add_argument("--dest", type=Path, help="with --one: the Parquet to write")
    parser.add_argument("--expect-rows", type=int, help="with --one: fail unless the Parquet has this many rows")
    parser.add_argument("--generate", nargs=2, metavar=("FILE", "ROWS"), help=argparse.SUPPRESS)
    parser.add_argument("--versions", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in args.methods + ([args.one[0]] if args.one else []) if m not in METHODS]
    if unknown:
        parser.error(f"unknown method(s) {', '.join(unknown)}; choose from {', '.join(METHODS)}")
    if args.repeat < 1 or args.rows < 1 or args.scale < 1:
        parser.error("--repeat, --rows and --scale must be positive")
    return args


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    if args.one:
        method, src = args.one[0], Path(args.one[1])
        dest = args.dest or args.work / f"{method}-{src.name.split('.')[0]}.parquet"
        print(json.dumps(run_one(method, src, dest, args.expect_rows)), flush=True)
        return 0
    if args.generate:
        generate_input(Path(args.generate[0]), int(args.generate[1]))
        return 0
    if args.versions:
        print(json.dumps(library_versions()))
        return 0

    load_at_start = os.getloadavg()[0]
    args.work.mkdir(parents=True, exist_ok=True)
    inputs = []
    for scale in sorted({1, args.scale}):
        for gz in (False, True):
            rows = args.rows * scale
            path = input_path(args.work, rows, gz)
            ensure_input(path, rows, script=__file__)
            inputs.append(Input(path, rows, scale))

    plan = [
        (method, item)
        for item in inputs
        for method in args.methods
        if not (method == "pandas" and item.scale > 1 and args.skip_pandas_5x)
    ]
    for item in inputs:
        warm_page_cache(item.path)
    runs: list[Run] = []
    total = len(plan) * args.repeat
    for repetition in range(args.repeat):
        # Rotate the order each round so that no method is always first (or last) on an input.
        shift = repetition % len(args.methods)
        order = args.methods[shift:] + args.methods[:shift]
        rounds = sorted(plan, key=lambda step: (inputs.index(step[1]), order.index(step[0])))
        for method, item in rounds:
            run = measure(method, item, args.work)
            runs.append(run)
            print(
                f"[{len(runs)}/{total}] round {repetition + 1} {METHODS[method]:<22} {item.label:<10}"
                f" wall {run.wall_s:6.2f} s  process {run.process_wall_s:6.2f} s  peak RSS {run.rss_mb:7,.0f} MB",
                file=sys.stderr,
                flush=True,
            )

    parent_rss_mb = maxrss_mb()
    floor_mb = min(run.rss_after_import_mb for run in runs)
    if parent_rss_mb >= floor_mb:
        print(
            f"warning: this process peaked at {parent_rss_mb:.0f} MB, not below the smallest child RSS after imports"
            f" ({floor_mb:.0f} MB): children inherit that high-water mark, so small peaks may read too high",
            file=sys.stderr,
        )
    summaries = summarise(runs)
    print(results_table(summaries))
    print()
    print("\n".join(goal_checks(summaries)))
    if args.write_docs:
        command = shlex.join(["python", "bench/convert_bench.py", *argv])
        DOCS_PATH.parent.mkdir(parents=True, exist_ok=True)
        env = environment(parent_rss_mb, load_at_start)
        DOCS_PATH.write_text(docs_text(summaries, command, env, args), encoding="utf-8")
        print(f"\nwrote {DOCS_PATH.relative_to(REPO)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
