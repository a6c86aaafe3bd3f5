"""Wall time and peak RSS of loading a month of yellow taxi trips into DuckDB: LoadToDuckDB and its peers.

Methods compared, on the same seeded month (as many rows as yellow 2021-01), each a whole process:

  luigi    `luigi --module luigi_tasks LoadToDuckDB --service yellow --month 2021-01 --local-scheduler`, with a
           local lake that holds the month's canonical Parquet and manifest (made beforehand, not timed): luigi's
           start-up, the done-check, the load in one transaction with its marker row, and the run history
  duckdb   `python -c "import duckdb; ... CREATE TABLE yellow AS SELECT * FROM read_parquet('<the same file>')"`:
           DuckDB reading the Parquet itself, nothing else, with its default settings
  duckdb-unordered  the same with preserve_insertion_order off, as LoadToDuckDB (and the course's dbt profile) sets
  psql     `psql -c "\\copy yellow_copy FROM 'file.csv' WITH (FORMAT csv, HEADER true)"` of the month's CSV into
           PostgreSQL (bench/postgres_bench.py's server and table), the usual fast way into a database

Every DuckDB measurement starts from no database file. Measurements are interleaved round-robin, the report gives
the median wall time and the largest peak RSS; on a shared machine each waits for the others' jobs to go quiet
and is made again if they used the CPU meanwhile (bench/postgres_bench.py's rules).

    python bench/duckdb_bench.py                            # 1,369,765 rows, 3 repeats
    python bench/duckdb_bench.py --write-docs               # ... and write docs/duckdb-benchmark.md
    python bench/duckdb_bench.py --rows 50000 --repeat 1    # a quick trial
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

from common import (
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
from postgres_bench import (
    COPY_TABLE,
    PSQL,
    Run,
    Server,
    _has_gnu_time,
    _sql_path,
    machine_busy_s,
    measure_psql,
    quiet,
)

DOCS_PATH = REPO / "docs" / "duckdb-benchmark.md"
METHODS = {
    "luigi": "luigi_tasks LoadToDuckDB",
    "duckdb": "duckdb CREATE TABLE AS read_parquet",
    "duckdb-unordered": "the same, preserve_insertion_order off",
    PSQL: "psql \\copy",
}
PEER = "duckdb"
GOAL_RATIO = 1.2
LUIGI = str(Path(sys.executable).with_name("luigi"))
CTAS = (
    "import duckdb, sys\n"
    "with duckdb.connect(sys.argv[1], config={'preserve_insertion_order': sys.argv[3] == 'ordered'}) as conn:\n"
    "    conn.execute('CREATE TABLE yellow AS SELECT * FROM read_parquet(?)', [sys.argv[2]])\n"
    "    print(conn.execute('SELECT count(*) FROM yellow').fetchone()[0])\n"
)


def make_lake(csv: Path, lake: Path) -> None:
    """The month's canonical Parquet and its manifest in a local lake, as ToParquet leaves them (a child's job)."""
    from luigi_tasks.catalog import YELLOW
    from luigi_tasks.convert import to_canonical_parquet
    from luigi_tasks.files import fingerprints_of
    from luigi_tasks.lake import Lake, LakeEntry, canonical_key

    store = Lake(str(lake))
    key = canonical_key(YELLOW, MONTH)
    dest = store.local_path(key)
    dest.parent.mkdir(parents=True, exist_ok=True)
    manifest = to_canonical_parquet(csv, dest, dataset=YELLOW, month=MONTH, source_url="file://bench")
    store.write_entry(key, LakeEntry(manifest, fingerprints_of(dest)))
    print(dest)


def count_rows(database: Path, table: str) -> int:
    import duckdb

    with duckdb.connect(str(database), read_only=True) as conn:
        return conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]


def library_versions() -> dict[str, str]:
    import duckdb
    import luigi

    return {**data_library_versions(), "duckdb": duckdb.__version__, "luigi": luigi.__version__}


def _timed(method: str, command: list[str], env: dict | None = None) -> Run:
    """Run a whole process; wall time from here, peak RSS and CPU from os.wait4, others' CPU from /proc/stat."""
    busy_before, started = machine_busy_s(), time.perf_counter()
    child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO, env=env, text=True)
    output, returncode, usage = wait_child(child)
    wall_s = time.perf_counter() - started
    errors = child.stderr.read()
    child.stderr.close()
    if returncode != 0:
        raise SystemExit(f"{METHODS[method]} failed (exit {returncode}):\n{output}{errors}")
    cpu_s = usage.ru_utime + usage.ru_stime
    run = Run(method, wall_s, wall_s, cpu_s, float("nan"), usage.ru_maxrss / 1024, None, total_cpu_s=cpu_s)
    run.other_cpu_s = machine_busy_s() - busy_before - cpu_s
    return run


def measure(method: str, work: Path, parquet: Path, csv: Path, rows: int, server: Server, gnu_time: bool) -> Run:
    """One measurement from an empty database; then the row count is checked."""
    database = work / f"{method}.duckdb"
    for stale in (database, database.with_name(database.name + ".wal")):
        stale.unlink(missing_ok=True)
    if method == PSQL:
        server.reset(create_copy_table=True)
        command = f"\\copy {COPY_TABLE} FROM {_sql_path(csv)} WITH (FORMAT csv, HEADER true)"
        busy_before = machine_busy_s()
        run = measure_psql(method, server, command, gnu_time, f"COPY {rows}")
        server.wait_idle()
        run.other_cpu_s = machine_busy_s() - busy_before - run.total_cpu_s  # the server's CPU is in it too
        return run
    if method == "luigi":
        config = work / "luigi.cfg"
        config.write_text(
            f"[lake]\nroot = {work / 'lake'}\n[duckdb]\npath = {database}\n"
            f"[history]\npath = {work / 'history.sqlite'}\n[core]\nlog_level = WARNING\nno_lock = true\n"
        )
        command = [LUIGI, "--module", "luigi_tasks", "LoadToDuckDB", "--service", "yellow", "--month", f"{MONTH:%Y-%m}",
                   "--local-scheduler"]  # fmt: skip
        run = _timed(method, command, env={**os.environ, "LUIGI_CONFIG_PATH": str(config)})
        table = "prod.yellow_tripdata"
    else:
        order = "ordered" if method == PEER else "unordered"
        run = _timed(method, [sys.executable, "-c", CTAS, str(database), str(parquet), order])
        table = "yellow"
    found = int(subprocess.run(script_command(__file__, "--count", str(database), table), cwd=REPO, check=True,
                               capture_output=True, text=True).stdout)  # fmt: skip
    if found != rows:
        raise SystemExit(f"{METHODS[method]}: {table} holds {found:,} rows, expected {rows:,}")
    return run


def median_table(runs: list[Run], rows: int) -> tuple[str, dict[str, float]]:
    medians = {m: statistics.median(r.wall_s for r in runs if r.method == m) for m in METHODS if any(
        r.method == m for r in runs)}  # fmt: skip
    lines = [
        f"| method | median wall (s) | vs {METHODS[PEER]} | rows/s | peak RSS (MB) | runs |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for method, wall in medians.items():
        mine = [r for r in runs if r.method == method]
        ratio = f"{wall / medians[PEER]:.2f}x" if PEER in medians else "-"
        lines.append(
            f"| {METHODS[method]} | {wall:.2f} | {ratio} | {rows / wall:,.0f} | {max(r.rss_mb for r in mine):,.0f}"
            f" | {len(mine)} |"
        )
    return "\n".join(lines), medians


def goal_line(medians: dict[str, float]) -> str:
    if "luigi" not in medians or PEER not in medians:
        return ""
    ratio = medians["luigi"] / medians[PEER]
    return (
        f"Goal: LoadToDuckDB within {GOAL_RATIO}x of DuckDB reading the Parquet itself: {ratio:.2f}x,"
        f" {verdict(ratio <= GOAL_RATIO)}."
    )


def docs_text(
    table: str, goal: str, command: str, env: dict, rows: int, csv_mb: float, parquet_mb: float, busy: bool
) -> str:
    listed = "\n".join(f"- {key}: {value}" for key, value in env.items())
    busy_note = (
        " Measured with `--busy-machine`: the machine is shared and other jobs ran throughout (their CPU seconds"
        " during each measurement are listed below), so the absolute times are not a quiet machine's; the ratios"
        " come from one interleaved run, every method under the same load."
        if busy
        else " Each measurement waits for the machine to be quiet and is made again if other processes used the CPU"
        " meanwhile."
    )
    return f"""# Benchmark: loading a month into DuckDB

Loading one month of yellow taxi trips ({rows:,} seeded synthetic rows, as many as yellow 2021-01) into a
local DuckDB file, each method a whole process started afresh, from no database file:

- **luigi_tasks LoadToDuckDB**: `luigi --module luigi_tasks LoadToDuckDB --service yellow --month 2021-01
  --local-scheduler` against a local lake holding the month's canonical Parquet ({parquet_mb:.0f} MB) and its
  manifest, made beforehand (not timed). The whole command: luigi's start-up, the done-check (lake manifest, DuckDB
  marker), the load (`CREATE SCHEMA`/`CREATE TABLE` from the catalogue, `DELETE` of the month, `INSERT ... SELECT
  ... FROM read_parquet(...)` with `source_month`, the marker row, one transaction) and the run history.
- **duckdb CREATE TABLE AS read_parquet**: `python -c` with `duckdb.connect(file)` and
  `CREATE TABLE yellow AS SELECT * FROM read_parquet('<the same Parquet>')`: DuckDB reading the file itself,
  with its default settings. The goal is measured against this one.
- **the same, preserve_insertion_order off**: that command with `preserve_insertion_order` off, as LoadToDuckDB
  sets it (a table's rows have no order; the course's dbt profile sets it off too), so that the gain from the
  setting alone shows.
- **psql \\copy**: `psql -c "\\copy yellow_copy FROM 'file.csv' WITH (FORMAT csv, HEADER true)"` of the month's
  CSV ({csv_mb:.0f} MB) into PostgreSQL, the server and table of [postgres-benchmark.md](postgres-benchmark.md)
  (a throwaway local cluster with fsync off); the wall time includes the server's work.

Medians of the wall time over the runs, largest peak RSS of the client process (psql's under GNU time when
available).{busy_note}

## Results

{table}

{goal}

## Command

```sh
{command}
```

## Environment

{listed}
"""


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=YELLOW_2021_01_ROWS, help="rows of the month")
    parser.add_argument("--repeat", type=int, default=3, help="measurements of each method")
    parser.add_argument("--methods", default=",".join(METHODS), help=f"comma-separated subset of: {', '.join(METHODS)}")
    parser.add_argument("--max-other-cpu", type=float, default=0.1, help="as in bench/postgres_bench.py")
    parser.add_argument(
        "--busy-machine",
        action="store_true",
        help="measure at once, without waiting for other processes to go quiet (a shared machine that never is):"
        " the round-robin keeps the ratios fair, not the absolute times",
    )
    parser.add_argument("--work", type=Path, default=WORK_DIR / "duckdb", help="where inputs and outputs go")
    parser.add_argument("--write-docs", action="store_true", help=f"write {DOCS_PATH.relative_to(REPO)}")
    parser.add_argument("--generate", nargs=2, metavar=("FILE", "ROWS"), help=argparse.SUPPRESS)
    parser.add_argument("--make-lake", nargs=2, metavar=("CSV", "LAKE"), help=argparse.SUPPRESS)
    parser.add_argument("--count", nargs=2, metavar=("DATABASE", "TABLE"), help=argparse.SUPPRESS)
    parser.add_argument("--versions", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    if [m for m in args.methods if m not in METHODS] or args.repeat < 1 or args.rows < 1:
        parser.error(f"--methods is a subset of {', '.join(METHODS)}; --repeat and --rows are positive")
    return args


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    if args.generate:
        generate_input(Path(args.generate[0]), int(args.generate[1]))
        return 0
    if args.make_lake:
        make_lake(Path(args.make_lake[0]), Path(args.make_lake[1]))
        return 0
    if args.count:
        print(count_rows(Path(args.count[0]), args.count[1]))
        return 0
    if args.versions:
        print(json.dumps(library_versions()))
        return 0

    args.work.mkdir(parents=True, exist_ok=True)
    csv = input_path(WORK_DIR, args.rows)
    WORK_DIR.mkdir(parents=True, exist_ok=True)
    ensure_input(csv, args.rows, script=__file__)
    print("making the lake's canonical Parquet (not timed) ...", file=sys.stderr, flush=True)
    made = subprocess.run(script_command(__file__, "--make-lake", str(csv), str(args.work / "lake")), cwd=REPO,
                          check=True, capture_output=True, text=True)  # fmt: skip
    parquet = Path(made.stdout.strip())
    for path in (csv, parquet):
        warm_page_cache(path)
    gnu_time = _has_gnu_time()
    server = Server()
    runs: list[Run] = []
    discarded: list[str] = []
    try:
        if PSQL in args.methods:
            server.start()
        for repetition in range(args.repeat):
            shift = repetition % len(args.methods)
            for method in args.methods[shift:] + args.methods[:shift]:
                once = functools.partial(measure, method, args.work, parquet, csv, args.rows, server, gnu_time)
                run = once() if args.busy_machine else quiet(once, METHODS[method], args.max_other_cpu, discarded)
                runs.append(run)
                shown = f"wall {run.wall_s:6.2f} s  peak RSS {run.rss_mb:6,.0f} MB  other CPU {run.other_cpu_s:5.2f} s"
                print(f"round {repetition + 1} {METHODS[method]:<40} {shown}", file=sys.stderr, flush=True)
    finally:
        if PSQL in args.methods:
            server.remove()
    table, medians = median_table(runs, args.rows)
    goal = goal_line(medians)
    print(table)
    print()
    print(goal)
    if args.write_docs:
        env = {
            **run_stamp(),
            **machine(maxrss_mb()),
            **child_library_versions(__file__),
            "measurements made again because other processes were busy": str(len(discarded)),
            "other CPU seconds during each measurement (for psql, the PostgreSQL server's included)": ", ".join(
                f"{r.other_cpu_s:.1f}" for r in runs
            ),
        }
        command = shlex.join(["python", "bench/duckdb_bench.py", *argv])
        sizes = csv.stat().st_size / 2**20, parquet.stat().st_size / 2**20
        text = docs_text(table, goal, command, env, args.rows, *sizes, busy=args.busy_machine)
        DOCS_PATH.write_text(text, encoding="utf-8")
        print(f"\nwrote {DOCS_PATH.relative_to(REPO)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
