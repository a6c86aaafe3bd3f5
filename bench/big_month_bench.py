"""The biggest months in bounded memory: ToParquet, LoadToPostgres and LoadToDuckDB of a month as large as the TLC's
largest (fhvhv 2019-03, 23,864,598 rows) against one of 6,000,000 rows, and against their peers, in one run.

The month is seeded and shaped like the TLC's own fhvhv Parquet of 2023 on (luigi_tasks.synthetic.
write_fhvhv_tlc_parquet: large_string, int32 location ids, timestamp[us], snappy), in the TLC's row groups of
1 Mi rows, or with --one-row-group in one row group for the whole file, as pandas writes it. Each size gets a local
lake that holds the file where DownloadTripData leaves it ([tlc] source = parquet: raw/fhvhv/...parquet) and the
zone lookup. Every step and every peer is a whole process, started afresh:

  ToParquet       luigi --module luigi_tasks ToParquet --service fhvhv --month 2019-03 --local-scheduler
  DuckDB COPY     python -c: COPY (SELECT <every column cast to the catalogue's type, NULL for the columns the
                  file lacks> FROM read_parquet('<raw>')) TO '<out>' (FORMAT parquet), DuckDB's default settings
  LoadToPostgres  luigi ... LoadToPostgres ..., into bench/postgres_bench.py's throwaway cluster
  LoadToDuckDB    luigi ... LoadToDuckDB ..., into a new DuckDB file ([duckdb] memory_limit 512MB)
  DuckDB CTAS     python -c: CREATE TABLE ... AS SELECT * FROM read_parquet('<the lake's canonical file>') into a
                  new DuckDB file, DuckDB's default settings

Peak RSS is each process's own: ru_maxrss from os.wait4, which on Linux starts at the parent's high-water mark, so
this parent never imports pyarrow or DuckDB (generating the month, planning the lake and counting rows run in
children). Each measurement waits for the machine to be quiet and is made again if other processes used the CPU
meanwhile (bench/postgres_bench.py's rules, the least disturbed try kept) unless --busy-machine; the report gives
the fastest wall time of the rounds and the largest peak RSS, and LoadToPostgres' time per row against the figures
measured before the month's size stopped mattering.

    python bench/big_month_bench.py                                   # 23,864,598 and 6,000,000 rows, 2 rounds
    python bench/big_month_bench.py --write-docs                      # ... and write docs/big-month-benchmark.md
    python bench/big_month_bench.py --one-row-group --write-docs      # one row group a file: its own section
    python bench/big_month_bench.py --rows 300000 --small-rows 100000 --repeat 1   # a quick trial
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import duckdb_bench
from common import (
    MB,
    REPO,
    SEED,
    WORK_DIR,
    child_library_versions,
    machine,
    maxrss_mb,
    run_stamp,
    script_command,
    verdict,
    warm_page_cache,
)
from duckdb_bench import CTAS, LUIGI, _timed
from duckdb_bench import GOAL_RATIO as GOAL_CTAS_RATIO
from postgres_bench import (
    MAX_TRIES,
    SERVER_SETTINGS,
    Run,
    Server,
    _interrupted,
    _others_note,
    changed_sources,
    observed,
    quiet,
    sources_snapshot,
)

DOCS_PATH = REPO / "docs" / "big-month-benchmark.md"
SERVICE = "fhvhv"
MONTH = dt.date(2019, 3, 1)
BIG_ROWS = 23_864_598  # fhvhv 2019-03, the TLC's largest month
SMALL_ROWS = 6_000_000
TLC_ROW_GROUP_ROWS = 1 << 20

STEPS = {
    "to_parquet": "luigi_tasks ToParquet",
    "duckdb_copy": "DuckDB COPY to Parquet, canonical casts",
    "load_postgres": "luigi_tasks LoadToPostgres",
    "load_duckdb": "luigi_tasks LoadToDuckDB",
    "duckdb_ctas": "DuckDB CREATE TABLE AS read_parquet",
}
TASKS = {"to_parquet": "ToParquet", "load_postgres": "LoadToPostgres", "load_duckdb": "LoadToDuckDB"}
PEERS = {"to_parquet": "duckdb_copy", "load_duckdb": "duckdb_ctas"}
# Measured in the order listed within a round; every other round each pair the other way round. The loads read the
# canonical file the round's ToParquet wrote.
PAIRS = (("to_parquet", "duckdb_copy"), ("load_postgres",), ("load_duckdb", "duckdb_ctas"))
# duckdb_bench._timed names a method that failed by its METHODS label: these steps are named there too.
duckdb_bench.METHODS.update(STEPS)

POSTGRES_TABLE = f"{SERVICE}_tripdata"
DUCKDB_TABLE = f"prod.{SERVICE}_tripdata"
CTAS_TABLE = "yellow"  # what duckdb_bench.CTAS creates
MEMORY_LIMIT_MB = 512

GOAL_RSS_MB = 400.0
GOAL_RSS_GROWTH = 0.10  # of the smaller month's peak
# LoadToDuckDB's process peaks about this much above [duckdb] memory_limit (luigi.cfg says so; tests/test_memory.py
# allows it): DuckDB's buffers stay within the limit, the rest is the interpreter, luigi, pyarrow and DuckDB's code.
DUCKDB_MARGIN_MB = 250.0
GOAL_COPY_RATIO = 1.0

# Measured by hand before the fix (pyarrow's pre-buffering on, no DuckDB memory_limit), each step a process of its
# own on this benchmark's month in 1 Mi-row groups: step -> rows -> (wall s, peak RSS MB).
BEFORE = {
    "to_parquet": {SMALL_ROWS: (3.6, 580), BIG_ROWS: (17.9, 1345)},
    "load_postgres": {SMALL_ROWS: (6.9, 452), BIG_ROWS: (40.0, 1163)},
    "load_duckdb": {SMALL_ROWS: (6.2, 932), BIG_ROWS: (20.4, 1823)},
    "duckdb_ctas": {SMALL_ROWS: (4.3, 662), BIG_ROWS: (17.3, 1549)},
}

# The conversion's peer: the SQL is made by a child (--plan), so that this script needs no pyarrow; the row count
# of the output is read from its footer.
COPY = (
    "import duckdb, sys\n"
    "with duckdb.connect() as conn:\n"
    "    conn.execute(sys.argv[1])\n"
    "    found = conn.execute('SELECT count(*) FROM read_parquet(?)', [sys.argv[2]]).fetchone()[0]\n"
    "assert found == int(sys.argv[3]), f'{found} rows'\n"
)
LOAD_HIGH = 1.5  # a 1-minute load average above this on 2 cores: other jobs shared the machine


# --- children --------------------------------------------------------------------------------------------------------


def generate(path: Path, rows: int, row_group_rows: int) -> None:
    from luigi_tasks.files import atomic_path
    from luigi_tasks.synthetic import write_fhvhv_tlc_parquet

    with atomic_path(path) as part:
        write_fhvhv_tlc_parquet(part, MONTH, rows, seed=SEED, row_group_rows=row_group_rows)


def _sql_literal(path: Path) -> str:
    return "'" + str(path).replace("'", "''") + "'"


def plan_lake(lake_root: Path, source: Path, copy_out: Path) -> dict[str, str]:
    """Put the month and the zone lookup's CSV in the lake as downloads leave them; the paths and the peer's SQL."""
    import pyarrow.parquet as pq

    from luigi_tasks.catalog import AMOUNT, CODE, FHVHV, TEXT, TIME, ZONES
    from luigi_tasks.lake import Lake, canonical_key, entry_key, raw_key

    lake = Lake(str(lake_root))
    raw = lake.local_path(raw_key(FHVHV, MONTH, "parquet"))
    zones = lake.local_path(raw_key(ZONES, None, "csv"))
    for folder in (raw.parent, zones.parent):
        folder.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, raw)
    except OSError:
        shutil.copyfile(source, raw)
    shutil.copyfile(REPO / "tests" / "data" / "taxi_zone_lookup.csv", zones)

    sql_types = {CODE: "BIGINT", AMOUNT: "DOUBLE", TIME: "TIMESTAMP", TEXT: "VARCHAR"}
    present = {}
    for name in pq.read_schema(source).names:
        column = FHVHV.column_for(name)
        if column is not None:
            present[column.name] = name
    selected = []
    for column in FHVHV.columns:
        sql_type = sql_types[column.type]
        value = f'CAST("{present[column.name]}" AS {sql_type})' if column.name in present else f"NULL::{sql_type}"
        selected.append(f'{value} AS "{column.name}"')
    copy_sql = (
        f"COPY (SELECT {', '.join(selected)} FROM read_parquet({_sql_literal(raw)}))"
        f" TO {_sql_literal(copy_out)} (FORMAT parquet)"
    )
    key = canonical_key(FHVHV, MONTH)
    return {
        "canonical": str(lake.local_path(key)),
        "entry": str(lake.local_path(entry_key(key))),
        "copy_sql": copy_sql,
    }


def library_versions() -> dict[str, str]:
    from importlib.metadata import version

    import psycopg2

    return {
        **duckdb_bench.library_versions(),
        "psycopg2": psycopg2.__version__.split()[0],
        "pgpq": version("pgpq"),
    }


# --- one size of month: its lake, its databases, its measurements ----------------------------------------------------


@dataclasses.dataclass
class Month:
    rows: int
    source: Path  # the generated month (cached), also the lake's raw file
    work: Path
    canonical: Path
    entry: Path
    copy_sql: str

    @property
    def config(self) -> Path:
        return self.work / "luigi.cfg"

    @property
    def copy_out(self) -> Path:
        return self.work / "duckdb-copy.parquet"

    def database(self, step: str) -> Path:
        return self.work / f"{step}.duckdb"

    def env(self, server: Server) -> dict[str, str]:
        return {**server.env, "LUIGI_CONFIG_PATH": str(self.config)}


def input_path(rows: int, row_group_rows: int) -> Path:
    groups = "1rg" if row_group_rows >= rows else f"{row_group_rows}rg"
    return WORK_DIR / f"{SERVICE}-{MONTH:%Y-%m}-{rows}r-{groups}-seed{SEED}.parquet"


def ensure_month(path: Path, rows: int, row_group_rows: int) -> None:
    """Generate the month unless it is cached, in a child: the generator's memory must not count in this process."""
    if path.exists():
        return
    print(f"generating {path.name} ({rows:,} rows) ...", file=sys.stderr, flush=True)
    command = script_command(__file__, "--generate", str(path), str(rows), str(row_group_rows))
    subprocess.run(command, cwd=REPO, check=True)


def prepare(rows: int, source: Path, work: Path, server: Server) -> Month:
    """A fresh lake holding the month's raw file and the zone lookup's canonical file (not timed)."""
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    planned = subprocess.run(
        script_command(__file__, "--plan", str(work / "lake"), str(source), str(work / "duckdb-copy.parquet")),
        cwd=REPO, check=True, capture_output=True, text=True,
    )  # fmt: skip
    paths = json.loads(planned.stdout)
    month = Month(rows, source, work, Path(paths["canonical"]), Path(paths["entry"]), paths["copy_sql"])
    month.config.write_text(
        f"[tlc]\nsource = parquet\n\n[lake]\nroot = {work / 'lake'}\n\n[postgres]\ndsn = {server.dsn}\n\n"
        f"[duckdb]\npath = {month.database('load_duckdb')}\nmemory_limit = {MEMORY_LIMIT_MB}MB\n\n"
        f"[history]\npath = {work / 'history.sqlite'}\n\n[progress]\ninterval = 3600\n\n"
        "[core]\nlog_level = WARNING\nno_lock = true\n"
    )
    zones = subprocess.run([LUIGI, "--module", "luigi_tasks", "ZonesToParquet", "--local-scheduler"], cwd=REPO,
                           env=month.env(server), capture_output=True, text=True)  # fmt: skip
    if zones.returncode != 0:
        raise SystemExit(f"ZonesToParquet failed (exit {zones.returncode}):\n{zones.stdout}{zones.stderr}")
    return month


def _remove_database(database: Path) -> None:
    for stale in (database, database.with_name(database.name + ".wal")):
        stale.unlink(missing_ok=True)
    shutil.rmtree(database.with_name(database.name + ".tmp"), ignore_errors=True)


def _count_duckdb(database: Path, table: str) -> int:
    done = subprocess.run(script_command(duckdb_bench.__file__, "--count", str(database), table), cwd=REPO,
                          check=True, capture_output=True, text=True)  # fmt: skip
    return int(done.stdout)


def measure(step: str, month: Month, server: Server) -> Run:
    """One measurement of a step from nothing made yet (no canonical file, database or table); then the rows."""
    command = [LUIGI, "--module", "luigi_tasks", TASKS.get(step, ""), "--service", SERVICE, "--month",
               f"{MONTH:%Y-%m}", "--local-scheduler"]  # fmt: skip
    if step == "to_parquet":
        for made in (month.entry, month.canonical):
            made.unlink(missing_ok=True)
    elif step == "duckdb_copy":
        month.copy_out.unlink(missing_ok=True)
        command = [sys.executable, "-c", COPY, month.copy_sql, str(month.copy_out), str(month.rows)]
    elif step == "load_postgres":
        server.sql("SET client_min_messages = warning", f"DROP TABLE IF EXISTS {POSTGRES_TABLE} CASCADE")
        server.reset()
    else:
        _remove_database(month.database(step))
        if step == "duckdb_ctas":
            command = [sys.executable, "-c", CTAS, str(month.database(step)), str(month.canonical), "ordered"]
    if step == "load_postgres":
        run = observed(server, lambda: _timed(step, command, month.env(server)))
    else:
        run = _timed(step, command, month.env(server))

    if step == "to_parquet":
        found = json.loads(month.entry.read_text())["manifest"]["rows_out"]
    elif step == "duckdb_copy":
        found = month.rows  # the process checked its output
        month.copy_out.unlink()
    elif step == "load_postgres":
        found = server.count(POSTGRES_TABLE)
    else:
        found = _count_duckdb(month.database(step), DUCKDB_TABLE if step == "load_duckdb" else CTAS_TABLE)
    if found != month.rows:
        raise SystemExit(f"{STEPS[step]} at {month.rows:,} rows: {found:,} rows made")
    return run


def least_disturbed(
    step: str, month: Month, server: Server, label: str, args: argparse.Namespace, discarded: list[str]
) -> Run:
    """A measurement: at once with --busy-machine; else once the machine is quiet, and made again (postgres_bench's
    rules) while other processes used the CPU meanwhile, the least disturbed of the tries kept."""
    tries: list[Run] = []

    def once() -> Run:
        tries.append(measure(step, month, server))
        return tries[-1]

    if args.busy_machine:
        return once()
    quiet(once, label, args.max_other_cpu, discarded)
    return min(tries, key=lambda run: run.other_cpu_s / run.wall_s)


# --- the report ------------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Figure:
    wall_s: float  # the fastest: other jobs on the machine only ever slow a run down
    rss_mb: float  # largest
    runs: int
    other_cpu_s: float  # what other processes used during the fastest run


def summarise(results: list[tuple[int, Run]]) -> dict[tuple[str, int], Figure]:
    groups: dict[tuple[str, int], list[Run]] = {}
    for rows, run in results:
        groups.setdefault((run.method, rows), []).append(run)
    figures = {}
    for key, runs in groups.items():
        fastest = min(runs, key=lambda run: run.wall_s)
        figures[key] = Figure(fastest.wall_s, max(r.rss_mb for r in runs), len(runs), max(0.0, fastest.other_cpu_s))
    return figures


def us_per_row(wall_s: float, rows: int) -> float:
    return wall_s / rows * 1e6


def before_postgres_us_per_row(rows: int) -> tuple[float, int]:
    """LoadToPostgres' µs per row before the fix at this size, or (other sizes) the lower of the two measured."""
    measured = BEFORE["load_postgres"]
    known = rows if rows in measured else min(measured, key=lambda r: us_per_row(measured[r][0], r))
    return us_per_row(measured[known][0], known), known


def results_table(figures: dict[tuple[str, int], Figure], sizes: list[int], with_before: bool) -> str:
    lines = [
        "| step | rows | wall s | µs/row | peak RSS MB | its peer | wall ÷ peer's"
        " | before the fix: wall s, peak RSS MB | others' CPU s |",
        "|---|---:|---:|---:|---:|---|---:|---:|---:|",
    ]
    for step in STEPS:
        for rows in sizes:
            figure = figures.get((step, rows))
            if figure is None:
                continue
            peer, ratio = "–", "–"
            if step in PEERS and (PEERS[step], rows) in figures:
                peer = STEPS[PEERS[step]]
                ratio = f"{figure.wall_s / figures[PEERS[step], rows].wall_s:.2f}x"
            elif step == "load_postgres":
                before, known = before_postgres_us_per_row(rows)
                peer = f"before the fix, {before:.2f} µs/row" + ("" if known == rows else f" (at {known:,} rows)")
                ratio = f"{us_per_row(figure.wall_s, rows) / before:.2f}x"
            measured_before = BEFORE.get(step, {}).get(rows)
            shown_before = f"{measured_before[0]:.1f} s, {measured_before[1]:,} MB" if (
                measured_before and with_before) else "–"  # fmt: skip
            lines.append(
                f"| {STEPS[step]} | {rows:,} | {figure.wall_s:.2f} | {us_per_row(figure.wall_s, rows):.2f}"
                f" | {figure.rss_mb:,.0f} | {peer} | {ratio} | {shown_before} | {figure.other_cpu_s:.1f} |"
            )
    return "\n".join(lines)


def goal_lines(figures: dict[tuple[str, int], Figure], big: int, small: int) -> list[str]:
    """One line per goal: the measured values and whether the goal is met."""

    def rss(step: str, rows: int) -> float:
        return figures[step, rows].rss_mb

    lines = []
    for step in ("to_parquet", "load_postgres"):
        growth = rss(step, big) / rss(step, small) - 1
        lines.append(
            f"- {STEPS[step]} peak RSS {rss(step, big):,.0f} MB at {big:,} rows (goal ≤ {GOAL_RSS_MB:.0f} MB):"
            f" {verdict(rss(step, big) <= GOAL_RSS_MB)}; {growth:+.1%} on {rss(step, small):,.0f} MB at"
            f" {small:,} rows (goal ≤ +{GOAL_RSS_GROWTH:.0%}): {verdict(growth <= GOAL_RSS_GROWTH)}"
        )
    step = "load_duckdb"
    limit = MEMORY_LIMIT_MB + DUCKDB_MARGIN_MB
    growth = rss(step, big) / rss(step, small) - 1
    margins = [rss(step, rows) - MEMORY_LIMIT_MB for rows in (big, small)]
    lines.append(
        f"- {STEPS[step]} peak RSS {rss(step, big):,.0f} MB at {big:,} rows and {rss(step, small):,.0f} MB at"
        f" {small:,}, margins of {margins[0]:+,.0f} and {margins[1]:+,.0f} MB over memory_limit {MEMORY_LIMIT_MB}MB"
        f" (goal ≤ {MEMORY_LIMIT_MB} + {DUCKDB_MARGIN_MB:.0f} MB):"
        f" {verdict(max(rss(step, big), rss(step, small)) <= limit)}; {growth:+.1%} from the smaller month to the"
        f" larger (goal ≤ +{GOAL_RSS_GROWTH:.0%}): {verdict(growth <= GOAL_RSS_GROWTH)}"
    )
    for step, goal in (("to_parquet", GOAL_COPY_RATIO), ("load_duckdb", GOAL_CTAS_RATIO)):
        peer = PEERS[step]
        ratios = {rows: figures[step, rows].wall_s / figures[peer, rows].wall_s for rows in (big, small)}
        shown = " and ".join(f"{ratio:.2f}x at {rows:,} rows" for rows, ratio in ratios.items())
        lines.append(
            f"- {STEPS[step]} wall time over its peer's ({STEPS[peer]}): {shown} (goal ≤ {goal:.1f}x):"
            f" {verdict(max(ratios.values()) <= goal)}"
        )
    step = "load_postgres"
    shown, ok = [], True
    for rows in (big, small):
        now = us_per_row(figures[step, rows].wall_s, rows)
        before, known = before_postgres_us_per_row(rows)
        shown.append(f"{now:.2f} µs/row at {rows:,} rows (before the fix {before:.2f}" +
                     ("" if known == rows else f", measured at {known:,} rows") + ")")  # fmt: skip
        ok = ok and now <= before
    lines.append(f"- {STEPS[step]} {' and '.join(shown)} (goal: no slower per row than before): {verdict(ok)}")
    return lines


def load_note(loads: list[float]) -> str:
    return (
        f"{loads[0]:.2f} at the start, {loads[-1]:.2f} at the end, at most {max(loads):.2f} before a measurement"
        f" (on {os.cpu_count()} cores)"
    )


# --- the docs page: one section per row-group layout, the others' sections kept -------------------------------------

_SECTION = re.compile(r"<!-- layout: (?P<key>[^ ]+) -->\n.*?<!-- end of layout: (?P=key) -->\n", re.DOTALL)


def layout(args: argparse.Namespace) -> tuple[str, str]:
    """The row-group layout measured: its key in the docs page and its title."""
    if args.one_row_group:
        return "one-row-group", "One row group a file (as pandas writes it)"
    title = f"Row groups of {args.row_group_rows:,} rows"
    if args.row_group_rows == TLC_ROW_GROUP_ROWS:
        title += " (the TLC's layout)"
    return f"{args.row_group_rows}-rows", title


def section_text(
    key: str,
    title: str,
    table: str,
    goals: list[str],
    command: str,
    run: dict[str, str],
    loads: list[float],
    busy_machine: bool,
) -> str:
    busy = ""
    if max(loads) > LOAD_HIGH:
        busy = (
            f"\n\nThe 1-minute load average rose above {LOAD_HIGH} on the {os.cpu_count()} cores during this run, to"
            f" {max(loads):.2f} (it counts the benchmark's own processes too: DuckDB and PostgreSQL keep both cores"
            " busy); the column others' CPU s says what other processes took during each figure."
        )
        if busy_machine:
            busy += (
                " Other jobs shared the cores with the measurements, so the times are a busy machine's; each step and"
                " its peer ran back to back under the same load, so the ratios hold better than the times. The peak"
                " RSS figures do not depend on the load."
            )
        else:
            busy += (
                " Each measurement waited for other processes to pause and was made again while they took CPU time,"
                " the least disturbed try kept."
            )
    listed = "\n".join(f"- {name}: {value}" for name, value in run.items())
    return f"""<!-- layout: {key} -->
## {title}

{table}

{chr(10).join(goals)}{busy}

```sh
{command}
```

{listed}
<!-- end of layout: {key} -->
"""


def docs_text(sections: list[str], environment: dict[str, str]) -> str:
    before = "\n".join(
        f"| {STEPS[step]} | {sizes[SMALL_ROWS][0]:.1f} s, {sizes[SMALL_ROWS][1]:,} MB"
        f" | {sizes[BIG_ROWS][0]:.1f} s, {sizes[BIG_ROWS][1]:,} MB |"
        for step, sizes in BEFORE.items()
    )
    listed = "\n".join(f"- {name}: {value}" for name, value in environment.items())
    return f"""# Benchmark: the biggest months in bounded memory

The TLC's largest month is fhvhv 2019-03, {BIG_ROWS:,} rows. This benchmark runs each step of luigi_tasks on a
month of that size and on one of {SMALL_ROWS:,} rows, next to a peer doing the same work, to show that a step's
peak memory does not grow with the month and how its time compares. The month is seeded synthetic data shaped like
the TLC's own fhvhv Parquet of 2023 on (`luigi_tasks.synthetic.write_fhvhv_tlc_parquet`: `large_string` text,
`int32` location ids, `timestamp[us]`, snappy, 24 columns), generated once into `bench/out/` (git-ignored).

Each size has a local lake that holds the month where `DownloadTripData` leaves it (`[tlc] source = parquet`:
`raw/fhvhv/fhvhv_tripdata_2019-03.parquet`) and the zone lookup's canonical file, made beforehand (not timed). Every
step and every peer is a whole process started afresh, timed from start to exit; its peak RSS is its own
(`ru_maxrss` from `os.wait4`; the benchmark's parent process stays far below any child's peak):

- **luigi_tasks ToParquet**: `luigi --module luigi_tasks ToParquet --service fhvhv --month 2019-03
  --local-scheduler`: luigi's start-up, the done-checks, the conversion of the raw file into the canonical Parquet
  (the catalogue's 27 columns, quality counts, checksums) and its manifest, and the run history.
- **DuckDB COPY to Parquet, canonical casts**, the conversion's peer: `python -c` with `duckdb.connect()` and
  `COPY (SELECT CAST(col AS <the catalogue's type>) AS col, ..., NULL::<type> AS <a column the file lacks>
  FROM read_parquet('<raw>')) TO '<out>' (FORMAT parquet)` (`BIGINT` for codes, `DOUBLE` for amounts, `TIMESTAMP`,
  `VARCHAR`), with DuckDB's default settings (memory_limit 80% of the RAM, a thread per core).
- **luigi_tasks LoadToPostgres**: the `luigi` command for `LoadToPostgres`, from the canonical file that ToParquet
  wrote, into the throwaway cluster of [postgres-benchmark.md](postgres-benchmark.md) (`fsync` off), its tables
  dropped before each measurement. Its peer is its own time per row before the fix.
- **luigi_tasks LoadToDuckDB**: the `luigi` command for `LoadToDuckDB`, into a new DuckDB file, with
  `[duckdb] memory_limit = {MEMORY_LIMIT_MB}MB` (the default) and one thread per core.
- **DuckDB CREATE TABLE AS read_parquet**, LoadToDuckDB's peer: `python -c` with `duckdb.connect(file)` and
  `CREATE TABLE t AS SELECT * FROM read_parquet('<the canonical file>')` into a new file, DuckDB's default settings.

Each step and its peer run back to back, in alternating order from round to round; the tables give the fastest wall
time of the rounds (other jobs on the machine only ever slow a run down) and the largest peak RSS; "others' CPU s" is
the CPU time other processes used during that fastest run (for LoadToPostgres, not counting the PostgreSQL server's),
from `/proc/stat`: on {os.cpu_count()} cores, each second of it was a second a core was taken from the step. Unless
a run says otherwise, each measurement waits for the machine to be quiet and is made again if other processes used
the CPU meanwhile (the rules of `bench/postgres_bench.py`, at most {MAX_TRIES} tries, the least disturbed one kept).
"MB" is MiB; DuckDB's `512MB` is 10^6-byte megabytes, 488 MiB, so the margins above the limit are stated on the safe
side.

### Before the fix

Measured by hand before the Parquet reader stopped pre-buffering and before DuckDB loads had a memory limit, each
step a process of its own, on this month in 1 Mi-row groups:

| step | {SMALL_ROWS:,} rows | {BIG_ROWS:,} rows |
|---|---:|---:|
{before}

{chr(10).join(sections)}
## Environment

{listed}
"""


def write_docs(key: str, section: str, environment: dict[str, str]) -> None:
    """Write the page with this layout's section, keeping the sections of the layouts not measured in this run."""
    old = DOCS_PATH.read_text(encoding="utf-8") if DOCS_PATH.exists() else ""
    sections = {match["key"]: match[0] for match in _SECTION.finditer(old)}
    sections[key] = section
    order = sorted(sections, key=lambda k: (k == "one-row-group", k != f"{TLC_ROW_GROUP_ROWS}-rows", k))
    DOCS_PATH.write_text(docs_text([sections[k] for k in order], environment), encoding="utf-8")


# --- command line ----------------------------------------------------------------------------------------------------


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=BIG_ROWS, help="rows of the big month")
    parser.add_argument("--small-rows", type=int, default=SMALL_ROWS, help="rows of the month it is compared with")
    parser.add_argument("--repeat", type=int, default=2, help="rounds of measurements")
    parser.add_argument("--row-group-rows", type=int, default=TLC_ROW_GROUP_ROWS, help="rows a row group")
    parser.add_argument("--one-row-group", action="store_true", help="one row group a file, as pandas writes it")
    parser.add_argument("--max-other-cpu", type=float, default=0.1, help="as in bench/postgres_bench.py")
    parser.add_argument("--busy-machine", action="store_true",
                        help="measure at once, without waiting for other processes to go quiet")  # fmt: skip
    parser.add_argument("--work", type=Path, default=WORK_DIR / "big-month", help="where lakes and databases go")
    parser.add_argument("--write-docs", action="store_true", help=f"write {DOCS_PATH.relative_to(REPO)}")
    parser.add_argument("--generate", nargs=3, metavar=("FILE", "ROWS", "GROUP_ROWS"), help=argparse.SUPPRESS)
    parser.add_argument("--plan", nargs=3, metavar=("LAKE", "SOURCE", "COPY_OUT"), help=argparse.SUPPRESS)
    parser.add_argument("--versions", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if min(args.rows, args.small_rows, args.repeat, args.row_group_rows) < 1 or args.small_rows >= args.rows:
        parser.error("--rows, --small-rows, --repeat and --row-group-rows are positive; --small-rows below --rows")
    return args


def child_main(args: argparse.Namespace) -> bool:
    """Run what a child was started for; False if this is the parent."""
    if args.generate:
        generate(Path(args.generate[0]), int(args.generate[1]), int(args.generate[2]))
    elif args.plan:
        print(json.dumps(plan_lake(*map(Path, args.plan))))
    elif args.versions:
        print(json.dumps(library_versions()))
    else:
        return False
    return True


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    if child_main(args):
        return 0

    loads = [os.getloadavg()[0]]
    sources = sources_snapshot()
    stamp = run_stamp()
    sizes = [args.rows, args.small_rows]
    months = {rows: input_path(rows, rows if args.one_row_group else args.row_group_rows) for rows in sizes}
    WORK_DIR.mkdir(parents=True, exist_ok=True)
    for rows, path in months.items():
        ensure_month(path, rows, rows if args.one_row_group else args.row_group_rows)

    signal.signal(signal.SIGTERM, _interrupted)
    server = Server()
    results: list[tuple[int, Run]] = []
    discarded: list[str] = []
    try:
        server.start()
        prepared = {rows: prepare(rows, path, args.work / f"{rows}r", server) for rows, path in months.items()}
        postgres = {
            "PostgreSQL server": server.sql("SHOW server_version"),
            "server settings": ", ".join(f"{name}={server.sql(f'SHOW {name}')}" for name in SERVER_SETTINGS),
        }
        for repetition in range(args.repeat):
            for rows in sizes if repetition % 2 == 0 else sizes[::-1]:
                month = prepared[rows]
                warm_page_cache(month.source)
                for pair in PAIRS:
                    for step in pair if repetition % 2 == 0 else pair[::-1]:
                        loads.append(os.getloadavg()[0])
                        label = f"{STEPS[step]} at {rows:,} rows"
                        run = least_disturbed(step, month, server, label, args, discarded)
                        results.append((rows, run))
                        print(f"round {repetition + 1} {label:<60} wall {run.wall_s:7.2f} s  peak RSS"
                              f" {run.rss_mb:6,.0f} MB  other CPU {run.other_cpu_s:5.2f} s",
                              file=sys.stderr, flush=True)  # fmt: skip
    finally:
        server.remove()
        shutil.rmtree(args.work, ignore_errors=True)
    loads.append(os.getloadavg()[0])

    parent_rss_mb = maxrss_mb()
    smallest = min(run.rss_mb for _, run in results)
    if parent_rss_mb >= smallest:
        print(f"warning: this process peaked at {parent_rss_mb:.0f} MB, not below the smallest child's peak"
              f" ({smallest:.0f} MB): children inherit that high-water mark", file=sys.stderr)  # fmt: skip
    changed = changed_sources(sources)
    if changed:
        print(f"warning: changed during the run, so rows may mix versions: {', '.join(changed)}", file=sys.stderr)
    figures = summarise(results)
    with_before = not args.one_row_group and args.row_group_rows == TLC_ROW_GROUP_ROWS
    table = results_table(figures, sizes, with_before)
    goals = goal_lines(figures, args.rows, args.small_rows)
    key, title = layout(args)
    print(f"## {title}\n\n{table}\n\n" + "\n".join(goals))
    print(f"\nload average (1 minute): {load_note(loads)}")
    if args.write_docs:
        run = {
            **stamp,
            "input": ", ".join(f"{rows:,} rows: {path.stat().st_size / MB:,.0f} MB" for rows, path in months.items()),
            "rounds": str(args.repeat),
            "load average (1 minute)": load_note(loads),
            "measured": "at once, without waiting for a quiet machine (--busy-machine)"
            if args.busy_machine
            else f"each once the machine was quiet; made again because others were busy: {len(discarded)}",
            "CPU time of other processes during a kept measurement": _others_note([r.other_cpu_s for _, r in results]),
            "luigi_tasks sources changed during the run": ", ".join(changed) or "none",
            "peak RSS of the benchmark's parent process": f"{parent_rss_mb:.0f} MB",
        }
        command = shlex.join(["python", "bench/big_month_bench.py", *argv])
        section = section_text(key, title, table, goals, command, run, loads, args.busy_machine)
        environment = {**machine(parent_rss_mb), **child_library_versions(__file__), **postgres}
        environment.pop("peak RSS of the benchmark's parent process")
        write_docs(key, section, environment)
        print(f"\nwrote {DOCS_PATH.relative_to(REPO)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
