"""Wall time and peak RSS of loading a month of yellow taxi trips into PostgreSQL: LoadToPostgres and the usual ways.

Methods compared, on the same seeded CSV and the same throwaway server:

  luigi      luigi_tasks.postgres.load_month, what LoadToPostgres runs: binary COPY of the canonical Parquet,
             encoded by pgpq, over 2 connections into a staging table, then attached as the month's partition in
             one transaction (the Parquet is made beforehand from the CSV, untimed)
  luigi-e2e  luigi_tasks.convert.to_canonical_parquet of the CSV, then load_month, in one process: the whole cost
  psql       psql -c "\\copy yellow_copy FROM 'file.csv' WITH (FORMAT csv, HEADER true)" into a pre-created table
  zoomcamp   the DataTalksClub zoomcamp ingest script: pandas.read_csv in chunks of 100,000 rows, each appended with
             DataFrame.to_sql through SQLAlchemy and psycopg2

The script starts a PostgreSQL cluster of its own (tests/postgres_cluster.py: initdb in a temp dir, fsync,
synchronous_commit and full_page_writes off) and removes it at the end. Before every measurement it drops what the
previous one made and runs CHECKPOINT; after it, it checks the row count. Every Python measurement runs in a fresh
interpreter, so the peak RSS is that method's alone (os.wait4 on the child); psql runs under GNU time, which reports
psql's own peak. Measurements are interleaved round-robin; the report gives the median wall time and the largest
peak RSS. The zoomcamp way takes minutes, so it runs --zoomcamp-repeat times (default once). On a shared machine,
each measurement first waits for the others' jobs to go quiet, and is made again if they used the CPU meanwhile.

    python bench/postgres_bench.py                            # 1,369,765 rows (yellow 2021-01), 3 repeats
    python bench/postgres_bench.py --write-docs               # ... and write docs/postgres-benchmark.md
    python bench/postgres_bench.py --rows 50000 --repeat 1    # a quick trial
    python bench/postgres_bench.py --breakdown                # ... plus measurements of where the time goes
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import functools
import json
import os
import resource
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from common import (
    COLUMNS,
    MB,
    MONTH,
    REPO,
    SEED,
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

DOCS_PATH = REPO / "docs" / "postgres-benchmark.md"

METHODS = {
    "luigi": "luigi_tasks LoadToPostgres",
    "luigi-e2e": "luigi_tasks CSV → Parquet → PostgreSQL",
    "psql": "psql \\copy",
    "zoomcamp": "zoomcamp ingest_script.py",
}
SUBJECT = "luigi"
PSQL = "psql"
ZOOMCAMP = "zoomcamp"

# What each method loads into. load_month writes the month's partition of yellow_tripdata and a marker row.
LUIGI_TABLE = "yellow_tripdata"
MARKER_TABLE = "table_updates"
COPY_TABLE = "yellow_copy"
ZOOMCAMP_TABLE = "yellow_taxi_2021_01"  # the zoomcamp DAG's yellow_taxi_{{ execution_date.strftime('%Y_%m') }}
TABLES = {"luigi": LUIGI_TABLE, "luigi-e2e": LUIGI_TABLE, "psql": COPY_TABLE, "zoomcamp": ZOOMCAMP_TABLE}
ZOOMCAMP_CHUNK_ROWS = 100_000

# Types that take the CSV as it is: the codes pandas wrote as "1.0" are double precision.
_COPY_TYPES = {
    "VendorID": "bigint",
    "tpep_pickup_datetime": "timestamp",
    "tpep_dropoff_datetime": "timestamp",
    "passenger_count": "double precision",
    "RatecodeID": "double precision",
    "store_and_fwd_flag": "text",
    "PULocationID": "bigint",
    "DOLocationID": "bigint",
    "payment_type": "double precision",
}
COPY_TABLE_SQL = (
    f"CREATE TABLE {COPY_TABLE} ("
    + ", ".join(f'"{name}" {_COPY_TYPES.get(name, "double precision")}' for name in COLUMNS)
    + ")"
)

GOAL_PSQL_RATIO = 0.7
GOAL_ZOOMCAMP_SPEEDUP = 50.0
GOAL_RSS_MB = 300.0

GNU_TIME = Path("/usr/bin/time")


# --- the child: one load in a fresh interpreter --------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Paths:
    dsn: str
    csv: Path
    parquet: Path
    dest: Path  # the end-to-end method's own Parquet


def _prepare_luigi(paths: Paths) -> Callable[[], int]:
    from luigi_tasks.catalog import YELLOW
    from luigi_tasks.postgres import load_month

    def run() -> int:
        return load_month(paths.dsn, paths.parquet, dataset=YELLOW, month=MONTH, marker_table=MARKER_TABLE)

    return run


def _prepare_luigi_e2e(paths: Paths) -> Callable[[], int]:
    from luigi_tasks.catalog import YELLOW
    from luigi_tasks.convert import to_canonical_parquet
    from luigi_tasks.postgres import load_month

    def run() -> int:
        to_canonical_parquet(paths.csv, paths.dest, dataset=YELLOW, month=MONTH, source_url="file://bench")
        return load_month(paths.dsn, paths.dest, dataset=YELLOW, month=MONTH, marker_table=MARKER_TABLE)

    return run


def _sqlalchemy_url(dsn: str) -> str:
    """The script's postgresql://user:password@host:port/dbname, from a key=value DSN and PGPASSWORD.

    The script's "postgresql://" meant psycopg2 in the SQLAlchemy of its day (1.4); SQLAlchemy 2.1 maps it to
    psycopg 3, so the driver is named.
    """
    from urllib.parse import quote

    parts = dict(item.split("=", 1) for item in dsn.split())
    password = quote(os.environ.get("PGPASSWORD", ""), safe="")
    return f"postgresql+psycopg2://{parts['user']}:{password}@{parts['host']}:{parts['port']}/{parts['dbname']}"


def _prepare_zoomcamp(paths: Paths) -> Callable[[], int]:
    import pandas as pd
    from sqlalchemy import create_engine

    url = _sqlalchemy_url(paths.dsn)

    def run() -> int:
        # The logic of the zoomcamp's ingest_data.py (week 1) and ingest_script.py (week 2), prints left out.
        engine = create_engine(url)
        df_iter = pd.read_csv(paths.csv, iterator=True, chunksize=ZOOMCAMP_CHUNK_ROWS)
        df = next(df_iter)
        df.tpep_pickup_datetime = pd.to_datetime(df.tpep_pickup_datetime)
        df.tpep_dropoff_datetime = pd.to_datetime(df.tpep_dropoff_datetime)
        df.head(n=0).to_sql(name=ZOOMCAMP_TABLE, con=engine, if_exists="replace")
        df.to_sql(name=ZOOMCAMP_TABLE, con=engine, if_exists="append")
        rows = len(df)
        while True:
            try:
                df = next(df_iter)
            except StopIteration:
                break
            df.tpep_pickup_datetime = pd.to_datetime(df.tpep_pickup_datetime)
            df.tpep_dropoff_datetime = pd.to_datetime(df.tpep_dropoff_datetime)
            df.to_sql(name=ZOOMCAMP_TABLE, con=engine, if_exists="append")
            rows += len(df)
        return rows

    return run


def _binary_copy_chunks(parquet: Path) -> Iterator[bytes]:
    """The bytes load_month sends (the Parquet's batches plus source_month, encoded by pgpq), from its own generator.

    That generator is private to luigi_tasks.postgres: should it change, change this call with it.
    """
    from luigi_tasks.postgres import _binary_copy_chunks as load_month_chunks

    return load_month_chunks(parquet, MONTH, None, [0])


def _prepare_encode(paths: Paths) -> Callable[[], int]:
    import pyarrow.parquet as pq

    import luigi_tasks.postgres  # noqa: F401  (imported here, so that the timed run does not)

    def run() -> int:
        for _ in _binary_copy_chunks(paths.parquet):
            pass
        return pq.read_metadata(paths.parquet).num_rows

    return run


PREPARE: dict[str, Callable[[Paths], Callable[[], int]]] = {
    "luigi": _prepare_luigi,
    "luigi-e2e": _prepare_luigi_e2e,
    "zoomcamp": _prepare_zoomcamp,
    "encode": _prepare_encode,
}


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run_one(method: str, paths: Paths) -> dict:
    """Run one load in this process; return the child's own measurements."""
    paths.dest.unlink(missing_ok=True)
    started = time.perf_counter()
    load = PREPARE[method](paths)
    import_s = time.perf_counter() - started
    rss_after_import_mb = maxrss_mb()

    cpu_before = _cpu_s()
    started = time.perf_counter()
    rows = load()
    wall_s = time.perf_counter() - started
    cpu_s = _cpu_s() - cpu_before
    paths.dest.unlink(missing_ok=True)
    return {
        "wall_s": wall_s,
        "cpu_s": cpu_s,
        "import_s": import_s,
        "rss_after_import_mb": rss_after_import_mb,
        "rows": rows,
    }


def make_parquet(csv: Path, parquet: Path) -> None:
    from luigi_tasks.catalog import YELLOW
    from luigi_tasks.convert import to_canonical_parquet

    to_canonical_parquet(csv, parquet, dataset=YELLOW, month=MONTH, source_url="file://bench")


def write_binary_copy(parquet: Path, dest: Path) -> None:
    with open(dest, "wb") as sink:
        for chunk in _binary_copy_chunks(parquet):
            sink.write(chunk)


def prepare_partition(dsn: str) -> None:
    """Create yellow_tripdata and the marker table as load_month does, and the 2021-01 partition; print its name."""
    import psycopg2

    from luigi_tasks.catalog import YELLOW
    from luigi_tasks.postgres import prepare_service_table, quote_ident

    conn = psycopg2.connect(dsn)
    try:
        partition = prepare_service_table(conn, YELLOW, MONTH, MARKER_TABLE, lock_timeout=60, file_schema=YELLOW.schema)
        with conn.cursor() as cur:
            cur.execute(
                f"CREATE TABLE {quote_ident(partition)} PARTITION OF {LUIGI_TABLE} FOR VALUES IN (%s)", (MONTH,)
            )
        conn.commit()
        print(partition)
    finally:
        conn.close()


# --- the server ----------------------------------------------------------------------------------------------------


class Server:
    """The throwaway cluster, driven through psql so that this process never loads a database driver."""

    def __init__(self) -> None:
        if str(REPO) not in sys.path:
            sys.path.insert(0, str(REPO))
        from tests.postgres_cluster import PostgresCluster

        self.cluster = PostgresCluster()
        self.env = {**os.environ, "PGPASSWORD": self.cluster.password}
        self.background: set[int] = set()

    @property
    def dsn(self) -> str:
        return self.cluster.dsn

    def start(self) -> None:
        self.cluster.start()
        self.postmaster = int((self.cluster.data / "postmaster.pid").read_text().split()[0])
        self.background = self._children()

    def remove(self) -> None:
        self.cluster.remove()

    def sql(self, *statements: str) -> str:
        command = ["psql", self.dsn, "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1"]
        for statement in statements:
            command += ["-c", statement]
        done = subprocess.run(command, env=self.env, capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"psql failed ({done.returncode}) on {statements}: {done.stderr.strip()}")
        return done.stdout.strip()

    def reset(self, create_copy_table: bool = False) -> None:
        """Drop what any method made, so that every measurement starts from the same empty database."""
        statements = [
            "SET client_min_messages = warning",
            f"DROP TABLE IF EXISTS {LUIGI_TABLE} CASCADE",
            f"DROP TABLE IF EXISTS {MARKER_TABLE}, {COPY_TABLE}, {ZOOMCAMP_TABLE} CASCADE",
        ]
        if create_copy_table:
            statements.append(COPY_TABLE_SQL)
        self.sql(*statements)
        self.sql("CHECKPOINT")
        self.wait_idle()

    def count(self, table: str) -> int:
        return int(self.sql(f"SELECT count(*) FROM {table}"))

    def verify(self, method: str, rows: int) -> None:
        found = self.count(TABLES[method])
        if found != rows:
            raise SystemExit(f"{METHODS[method]}: {TABLES[method]} holds {found:,} rows, the CSV has {rows:,}")
        if method.startswith("luigi"):
            marker = f"{LUIGI_TABLE}:{MONTH:%Y-%m}"
            if self.sql(f"SELECT count(*) FROM {MARKER_TABLE} WHERE update_id = '{marker}'") != "1":
                raise SystemExit(f"{METHODS[method]}: no marker row {marker} in {MARKER_TABLE}")

    # Server CPU: the postmaster's own and reaped children's time, plus the live children's (backends, checkpointer,
    # WAL writer, ...). Linux only, like ru_maxrss here.

    def _children(self) -> set[int]:
        return {pid for pid, ppid, _ in _proc_stats() if ppid == self.postmaster}

    def cpu_s(self) -> float:
        ticks = 0
        for pid, ppid, (utime, stime, cutime, cstime) in _proc_stats():
            if pid == self.postmaster:
                ticks += utime + stime + cutime + cstime
            elif ppid == self.postmaster:
                ticks += utime + stime
        return ticks / os.sysconf("SC_CLK_TCK")

    def wait_idle(self, timeout_s: float = 5.0) -> None:
        """Wait until the last client's backend has exited and been reaped, so that its CPU time is counted once."""
        deadline = time.monotonic() + timeout_s
        while self._children() - self.background and time.monotonic() < deadline:
            time.sleep(0.02)


def _proc_stats():
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            text = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        fields = text.rsplit(")", 1)[1].split()
        # Fields 4 (ppid) and 14-17 (utime, stime, cutime, cstime) of proc(5), counted from 3 (state).
        yield int(entry.name), int(fields[1]), tuple(int(f) for f in fields[11:15])


# --- the parent: many measurements, round-robin --------------------------------------------------------------------
#
# On Linux a child's ru_maxrss starts at its parent's high-water mark: fork (or vfork) and exec carry it over. So the
# parent never imports pyarrow, pandas or a database driver and never holds data; what needs them (generating the
# input, making the Parquet, reading library versions) runs in a child of its own. psql's peak (about 12 MB) is below
# this process's, so psql runs under GNU time, which forks it from a small process and reports psql's own peak.


def _has_gnu_time() -> bool:
    try:
        done = subprocess.run([str(GNU_TIME), "--version"], capture_output=True, text=True)
    except OSError:
        return False
    return "GNU" in done.stdout + done.stderr


@dataclasses.dataclass
class Run:
    method: str
    wall_s: float
    process_wall_s: float
    cpu_s: float  # the client's
    server_cpu_s: float
    rss_mb: float
    rss_after_import_mb: float | None
    total_cpu_s: float  # the client process's whole CPU time, start-up included
    other_cpu_s: float = float("nan")  # CPU time of everything else on the machine over the measurement


def measure_python(method: str, server: Server, paths: Paths) -> Run:
    """Run one load in a fresh interpreter; peak RSS comes from os.wait4 on the child."""
    command = script_command(
        __file__, "--one", method, "--dsn", server.dsn, "--csv", str(paths.csv), "--parquet", str(paths.parquet),
        "--dest", str(paths.dest),
    )  # fmt: skip
    started = time.perf_counter()
    child = subprocess.Popen(command, stdout=subprocess.PIPE, cwd=REPO, env=server.env, text=True)
    output, returncode, usage = wait_child(child)
    process_wall_s = time.perf_counter() - started
    if returncode != 0:
        raise SystemExit(f"{METHODS.get(method, method)} failed (exit {returncode}); see stderr above")
    result = json.loads(output.strip().splitlines()[-1])
    return Run(
        method=method,
        wall_s=result["wall_s"],
        process_wall_s=process_wall_s,
        cpu_s=result["cpu_s"],
        server_cpu_s=float("nan"),
        rss_mb=usage.ru_maxrss / 1024,
        rss_after_import_mb=result["rss_after_import_mb"],
        total_cpu_s=usage.ru_utime + usage.ru_stime,
    )


def measure_psql(method: str, server: Server, command: str, gnu_time: bool, expect: str) -> Run:
    """Run psql -c `command`, timed as a whole process; `expect` is what psql must print (e.g. 'COPY 1369765')."""
    psql = ["psql", server.dsn, "-X", "-v", "ON_ERROR_STOP=1", "-c", command]
    with tempfile.NamedTemporaryFile("r", prefix="psql-usage-", suffix=".txt") as report:
        if gnu_time:
            psql = [str(GNU_TIME), "-f", "%M %U %S", "-o", report.name, *psql]
        started = time.perf_counter()
        child = subprocess.Popen(psql, stdout=subprocess.PIPE, env=server.env, text=True)
        output, returncode, usage = wait_child(child)
        wall_s = time.perf_counter() - started
        if returncode != 0:
            raise SystemExit(f"{METHODS.get(method, method)} failed (exit {returncode}); see stderr above")
        if output.strip() != expect:
            raise SystemExit(f"{METHODS.get(method, method)}: psql printed {output.strip()!r}, expected {expect!r}")
        if gnu_time:
            rss_kb, user_s, system_s = report.read().split()[-3:]
            rss_mb, cpu_s = int(rss_kb) / 1024, float(user_s) + float(system_s)
        else:
            rss_mb, cpu_s = usage.ru_maxrss / 1024, usage.ru_utime + usage.ru_stime
    return Run(method, wall_s, wall_s, cpu_s, float("nan"), rss_mb, None, total_cpu_s=cpu_s)


def _sql_path(path: Path) -> str:
    return "'" + str(path).replace("'", "''") + "'"


def machine_busy_s() -> float:
    """CPU time the whole machine has spent busy (all CPUs, hypervisor steal included), from /proc/stat."""
    user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, Path("/proc/stat").read_text().split()[1:9])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def observed(server: Server, load: Callable[[], Run]) -> Run:
    """Run `load`, adding the server's CPU time over it and what the rest of the machine used meanwhile."""
    server_before, busy_before = server.cpu_s(), machine_busy_s()
    run = load()
    server.wait_idle()
    run.server_cpu_s = server.cpu_s() - server_before
    run.other_cpu_s = machine_busy_s() - busy_before - run.server_cpu_s - run.total_cpu_s
    return run


MAX_TRIES = 5
OTHER_CPU_GRACE_S = 0.25
QUIET_CPU_SHARE = 0.1  # of one CPU
QUIET_SECONDS = 3
QUIET_WAIT_MAX_S = 300.0


def wait_for_quiet(label: str) -> None:
    """Wait (a while at most) until the machine has been idle for QUIET_SECONDS: on a shared machine, others' jobs
    would slow the methods down unevenly."""
    started = time.monotonic()
    quiet_seconds = 0
    while quiet_seconds < QUIET_SECONDS and time.monotonic() - started < QUIET_WAIT_MAX_S:
        before = machine_busy_s()
        time.sleep(1.0)
        quiet_seconds = quiet_seconds + 1 if machine_busy_s() - before < QUIET_CPU_SHARE else 0
    waited = time.monotonic() - started - QUIET_SECONDS
    if waited > 1:
        print(f"{label}: waited {waited:.0f} s for other processes to finish", file=sys.stderr, flush=True)


def quiet(measure_once: Callable[[], Run], label: str, max_other: float, discarded: list[str]) -> Run:
    """Make a measurement again if the rest of the machine was busy meanwhile (a shared machine); at most MAX_TRIES."""
    for attempt in range(1, MAX_TRIES + 1):
        wait_for_quiet(label)
        run = measure_once()
        allowed = OTHER_CPU_GRACE_S + max_other * run.process_wall_s
        if run.other_cpu_s <= allowed:
            return run
        verdict = "kept, the last try" if attempt == MAX_TRIES else "discarded, measuring again"
        print(
            f"{label}: other processes used {run.other_cpu_s:.2f} s of CPU (allowed {allowed:.2f} s): {verdict}",
            file=sys.stderr,
            flush=True,
        )
        if attempt < MAX_TRIES:
            discarded.append(label)
    return run


def measure(method: str, server: Server, paths: Paths, rows: int, gnu_time: bool) -> Run:
    """One measurement from an empty database: reset, load, count."""
    server.reset(create_copy_table=method == PSQL)
    if method == PSQL:
        command = f"\\copy {COPY_TABLE} FROM {_sql_path(paths.csv)} WITH (FORMAT csv, HEADER true)"
        run = observed(server, lambda: measure_psql(method, server, command, gnu_time, f"COPY {rows}"))
    else:
        run = observed(server, lambda: measure_python(method, server, paths))
    server.verify(method, rows)
    return run


# --- where the time goes: optional extra measurements --------------------------------------------------------------

BREAKDOWN = {
    "encode": "Parquet read + pgpq encoding, no server (client side of LoadToPostgres)",
    "psql-binary": "psql \\copy of that binary stream, from a file, into the month partition",
    "server-binary": "server-side COPY of that binary file into the month partition",
    "server-csv": f"server-side COPY of the CSV into {COPY_TABLE}",
}


def measure_breakdown(step: str, server: Server, paths: Paths, binary: Path, rows: int, gnu_time: bool) -> Run:
    server.reset(create_copy_table=step == "server-csv")
    partition = ""
    if step in ("psql-binary", "server-binary"):
        done = subprocess.run(
            script_command(__file__, "--prepare-partition", server.dsn), cwd=REPO, env=server.env, check=True,
            capture_output=True, text=True,
        )  # fmt: skip
        partition = done.stdout.strip().splitlines()[-1]
        server.sql("CHECKPOINT")
        server.wait_idle()
    if step == "encode":
        run = observed(server, lambda: measure_python("encode", server, paths))
    else:
        if step == "psql-binary":
            command = f"\\copy {partition} FROM {_sql_path(binary)} WITH (FORMAT binary)"
        elif step == "server-binary":
            command = f"COPY {partition} FROM {_sql_path(binary)} WITH (FORMAT binary)"
        else:
            command = f"COPY {COPY_TABLE} FROM {_sql_path(paths.csv)} WITH (FORMAT csv, HEADER true)"
        run = observed(server, lambda: measure_psql(step, server, command, gnu_time, f"COPY {rows}"))
    run.method = step
    if partition:
        found = server.count(partition)
        if found != rows:
            raise SystemExit(f"{step}: {partition} holds {found:,} rows, expected {rows:,}")
    return run


# --- the report ----------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Summary:
    method: str
    label: str
    wall_s: float  # median
    wall_min_s: float
    wall_max_s: float
    process_wall_s: float  # median
    cpu_s: float  # median
    server_cpu_s: float  # median
    rss_mb: float  # max
    rss_after_import_mb: float | None  # median
    runs: int
    psql_ratio: float = float("nan")
    zoomcamp_speedup: float = float("nan")
    process_psql_ratio: float = float("nan")


def summarise(runs: list[Run], labels: dict[str, str]) -> list[Summary]:
    groups: dict[str, list[Run]] = {}
    for run in runs:
        groups.setdefault(run.method, []).append(run)
    summaries = []
    for method in [m for m in labels if m in groups]:
        group = groups[method]
        walls = [r.wall_s for r in group]
        after_import = [r.rss_after_import_mb for r in group if r.rss_after_import_mb is not None]
        summaries.append(
            Summary(
                method=method,
                label=labels[method],
                wall_s=statistics.median(walls),
                wall_min_s=min(walls),
                wall_max_s=max(walls),
                process_wall_s=statistics.median(r.process_wall_s for r in group),
                cpu_s=statistics.median(r.cpu_s for r in group),
                server_cpu_s=statistics.median(r.server_cpu_s for r in group),
                rss_mb=max(r.rss_mb for r in group),
                rss_after_import_mb=statistics.median(after_import) if after_import else None,
                runs=len(group),
            )
        )
    by_method = {s.method: s for s in summaries}
    for summary in summaries:
        if PSQL in by_method:
            summary.psql_ratio = summary.wall_s / by_method[PSQL].wall_s
            summary.process_psql_ratio = summary.process_wall_s / by_method[PSQL].process_wall_s
        if ZOOMCAMP in by_method:
            summary.zoomcamp_speedup = by_method[ZOOMCAMP].wall_s / summary.wall_s
    return summaries


def _x(value: float) -> str:
    return "–" if value != value else f"{value:.2f}x" if value < 10 else f"{value:.0f}x"


def _mb(value: float | None) -> str:
    return "–" if value is None else f"{value:,.0f}"


def results_table(summaries: list[Summary], rows: int) -> str:
    header = (
        "| method | wall s (median) | wall s (min–max) | process wall s | client CPU s | server CPU s"
        " | client peak RSS MB (max) | RSS after imports MB | wall vs psql \\copy | zoomcamp wall ÷ wall"
        " | rows/s | runs |"
    )
    lines = [header, "|" + "---|" * 12]
    for s in summaries:
        lines.append(
            f"| {s.label} | {s.wall_s:.2f} | {s.wall_min_s:.2f}–{s.wall_max_s:.2f} | {s.process_wall_s:.2f}"
            f" | {s.cpu_s:.2f} | {s.server_cpu_s:.2f} | {_mb(s.rss_mb)} | {_mb(s.rss_after_import_mb)}"
            f" | {_x(s.psql_ratio)} | {_x(s.zoomcamp_speedup)} | {rows / s.wall_s:,.0f} | {s.runs} |"
        )
    return "\n".join(lines)


def breakdown_table(summaries: list[Summary]) -> str:
    header = "| step | wall s (median) | wall s (min–max) | client CPU s | server CPU s | client peak RSS MB | runs |"
    lines = [header, "|" + "---|" * 7]
    for s in summaries:
        lines.append(
            f"| {s.label} | {s.wall_s:.2f} | {s.wall_min_s:.2f}–{s.wall_max_s:.2f} | {s.cpu_s:.2f}"
            f" | {s.server_cpu_s:.2f} | {_mb(s.rss_mb)} | {s.runs} |"
        )
    return "\n".join(lines)


def goal_checks(summaries: list[Summary]) -> list[str]:
    """One line per goal: the measured value and whether the goal is met."""
    by_method = {s.method: s for s in summaries}
    subject = by_method.get(SUBJECT)
    if subject is None:
        return []

    lines = []
    if PSQL in by_method:
        lines.append(
            f"- whole process (interpreter start-up and imports included) {_x(subject.process_psql_ratio)}"
            f" psql \\copy's (goal ≤ {GOAL_PSQL_RATIO:.1f}x): {verdict(subject.process_psql_ratio <= GOAL_PSQL_RATIO)}"
            f" (the load alone: {_x(subject.psql_ratio)})"
        )
    if ZOOMCAMP in by_method:
        lines.append(
            f"- {subject.zoomcamp_speedup:.0f}x faster than the zoomcamp way (goal ≥ {GOAL_ZOOMCAMP_SPEEDUP:.0f}x):"
            f" {verdict(subject.zoomcamp_speedup >= GOAL_ZOOMCAMP_SPEEDUP)}"
        )
    lines.append(
        f"- client peak RSS {subject.rss_mb:,.0f} MB (goal ≤ {GOAL_RSS_MB:.0f} MB):"
        f" {verdict(subject.rss_mb <= GOAL_RSS_MB)}"
    )
    return lines


# --- environment and docs ------------------------------------------------------------------------------------------


def library_versions() -> dict[str, str]:
    from importlib.metadata import version

    import psycopg2
    import sqlalchemy

    return {
        **data_library_versions(),
        "psycopg2": psycopg2.__version__.split()[0],
        "pgpq": version("pgpq"),
        "sqlalchemy": sqlalchemy.__version__,
    }


SERVER_SETTINGS = ["fsync", "synchronous_commit", "full_page_writes", "wal_level", "shared_buffers", "max_wal_size"]


def sources_snapshot() -> dict[str, str]:
    """The luigi_tasks sources' digests, to tell whether (and which of) them changed while the benchmark ran."""
    import hashlib

    return {
        str(path.relative_to(REPO)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted((REPO / "luigi_tasks").rglob("*.py"))
    }


def changed_sources(before: dict[str, str]) -> list[str]:
    after = sources_snapshot()
    return sorted(name for name in before.keys() | after.keys() if before.get(name) != after.get(name))


def _others_note(others: list[float]) -> str:
    """How busy the rest of the machine was: a quiet machine keeps this near zero."""
    # Clock ticks of 10 ms make small values jitter around zero.
    return f"median {max(0.0, statistics.median(others)):.2f} s, at most {max(0.0, *others):.2f} s"


def environment(
    server: Server, parent_rss_mb: float, gnu_time: bool, others: list[float], discarded: list[str], changed: list[str]
) -> dict[str, str]:
    settings = ", ".join(f"{name}={server.sql(f'SHOW {name}')}" for name in SERVER_SETTINGS)
    psql_version = subprocess.run(["psql", "--version"], capture_output=True, text=True).stdout.strip()
    return {
        **run_stamp(),
        "luigi_tasks sources changed during the run": ", ".join(changed) or "none",
        **child_library_versions(__file__),
        "PostgreSQL server": server.sql("SHOW server_version"),
        "psql": psql_version.removeprefix("psql (PostgreSQL) "),
        "server settings": settings,
        "psql peak RSS from": "GNU time" if gnu_time else "os.wait4 (a floor: this process's own peak)",
        **machine(parent_rss_mb),
        "CPU time of other processes during a measurement": _others_note(others),
        "measurements made again because other processes were busy": ", ".join(
            f"{label} ({count}x)" for label, count in collections.Counter(discarded).items()
        )
        or "none",
    }


def docs_text(
    summaries: list[Summary],
    breakdown: list[Summary],
    command: str,
    env: dict[str, str],
    args: argparse.Namespace,
    csv_mb: float,
    binary_mb: float,
) -> str:
    rows = f"{args.rows:,} rows"
    if args.rows == YELLOW_2021_01_ROWS:
        rows += " (as many as yellow 2021-01)"
    repeats = "once" if args.repeat == 1 else f"{args.repeat} times"
    zoomcamp_repeats = "once" if args.zoomcamp_repeat == 1 else f"{args.zoomcamp_repeat} times"
    env_lines = "\n".join(f"- {key}: {value}" for key, value in env.items())
    breakdown_section = ""
    if breakdown:
        breakdown_section = f"""
### Where the time goes

Extra measurements (`--breakdown`), each from an empty database like the ones above. The binary stream is what
`load_month` sends, written to a file beforehand: the Parquet's 20 columns plus `source_month`, encoded by pgpq
({binary_mb:,.0f} MB against the CSV's {csv_mb:,.0f} MB). Server-side `COPY` reads a file in the server process, so
it has no client and no socket: it is the server's own cost of parsing and storing the rows. The encoding alone is
the client's own cost. LoadToPostgres runs both at once, the server consuming what the client sends, so its wall
time is at least the larger of the two.

{breakdown_table(breakdown)}
"""
    return f"""# Benchmark: loading a month into PostgreSQL

Loading one month of yellow taxi trips into PostgreSQL, side by side, from the same {csv_mb:,.0f} MB CSV of
{rows}:

- **luigi_tasks LoadToPostgres**: `luigi_tasks.postgres.load_month`, what the `LoadToPostgres` task runs, from the
  canonical Parquet that `ToParquet` makes of the same CSV (made beforehand, not timed). It creates the
  `yellow_tripdata` table if missing and a staging table for the month, streams the Parquet's row groups into it as
  binary `COPY` encoded by pgpq over 2 connections at once (`[postgres] load_streams`), then in one transaction
  drops the month's old partition if any, attaches the staging table as the month's partition and upserts the
  month's row in the marker table `{MARKER_TABLE}`. It loads the catalogue's 20 columns (`airport_fee` and
  `cbd_congestion_fee` are NULL in 2021) plus `source_month`, with integer codes as `bigint`.
- **luigi_tasks CSV → Parquet → PostgreSQL**: `luigi_tasks.convert.to_canonical_parquet` of the CSV, then
  `load_month`, in one process: the whole cost of getting a downloaded CSV into the database this way.
- **psql \\copy**: `psql "$DSN" -c "\\copy {COPY_TABLE} FROM 'file.csv' WITH (FORMAT csv, HEADER true)"` into a table
  created beforehand (not timed) with types that take the CSV as it is: `bigint` for `VendorID` and the location
  ids, `timestamp` for the two datetimes, `text` for `store_and_fwd_flag`, `double precision` for the rest
  (including `passenger_count`, `RatecodeID` and `payment_type`, written as `1.0`). The CSV is parsed by the server.
- **zoomcamp ingest_script.py**: the logic of the DataTalksClub data-engineering zoomcamp's ingest script (week 1
  `ingest_data.py`, week 2 `ingest_script.py`): `sqlalchemy.create_engine("postgresql://...")` with psycopg2,
  `pandas.read_csv(csv, iterator=True, chunksize=100000)`, `pd.to_datetime` on the two datetime columns,
  `df.head(n=0).to_sql(..., if_exists="replace")`, then `df.to_sql(..., if_exists="append")` for every chunk,
  with `to_sql`'s defaults (the DataFrame index becomes an indexed column; rows go in as batched `INSERT`s, one
  transaction per chunk). The URL says `postgresql+psycopg2://`: in the SQLAlchemy of the script's day (1.4)
  `postgresql://` meant psycopg2, while SQLAlchemy 2.1 maps it to psycopg 3.

### Goals

LoadToPostgres should take at most {GOAL_PSQL_RATIO:.1f}x the wall time of `psql \\copy` of the CSV, the usual
fast way; be at least {GOAL_ZOOMCAMP_SPEEDUP:.0f}x faster than the zoomcamp way; and peak at no more than
{GOAL_RSS_MB:.0f} MB of resident memory in the client, whatever the month's size. The end-to-end row is there to show
the whole cost from a CSV; the goals are about the load.

### Results

The server is a local throwaway cluster that the benchmark starts for itself (`tests/postgres_cluster.py`: initdb
in a temp dir, TCP on 127.0.0.1, scram password authentication) with durability off: `fsync=off`,
`synchronous_commit=off`, `full_page_writes=off`; other settings are the defaults. Every method runs against the
same server with the same settings; a durable server adds WAL flushes and full-page writes to every method (and a
flush per commit: the zoomcamp way commits once per chunk). Client and server share the machine's CPUs.

Before every measurement the tables any method made are dropped and the server runs `CHECKPOINT`; after it, the
table's row count is checked against the CSV's (and, for luigi_tasks, the marker row). Each Python measurement runs
in a fresh interpreter: "wall" is the load alone, timed inside the child after its imports; "process wall" is the
whole child process, start-up and imports included. For psql both are the psql process. "Client peak RSS" is the
client process's `ru_maxrss` (from `os.wait4` for the Python children; psql's from GNU time, since psql peaks below
the benchmark's own parent process); it does not include the server. "Client CPU" is the client's user + system
time during the load; "server CPU" is that of all the server's processes over the measurement, from `/proc`. One
untimed `psql \\copy` warms the server up (and makes its WAL segments) before the first measurement. Since the
machine may be shared, each measurement waits until it has been idle for {QUIET_SECONDS} s, and the machine's CPU time
not spent by the client or the server is watched (from `/proc/stat`): a measurement during which other processes used
more than {OTHER_CPU_GRACE_S} s plus {args.max_other_cpu:.0%} of its wall time is made again, up to {MAX_TRIES} tries
(see the environment below).

luigi_tasks and psql were measured {repeats} and the zoomcamp way {zoomcamp_repeats} (it takes minutes), the
methods interleaved round-robin; the table gives the median wall time and the largest peak RSS. The input files are
read once before timing, so every method finds them in the page cache.

{results_table(summaries, args.rows)}

{chr(10).join(goal_checks(summaries))}
{breakdown_section}
### How to reproduce

```
{command}
```

The CSV is the seeded file of the conversion benchmark (`luigi_tasks.synthetic.write_trip_csv`, seed {SEED}, the
18-column 2019-2021 yellow header), cached in `bench/out/` and generated only when missing; see `bench/README.md`.
The script needs the PostgreSQL server binaries (initdb, pg_ctl; `PG_BINDIR` or `/usr/lib/postgresql/*/bin`), psql,
and SQLAlchemy for the zoomcamp way.

### Environment

{env_lines}
"""


# --- command line --------------------------------------------------------------------------------------------------


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=YELLOW_2021_01_ROWS, help="rows of the CSV")
    parser.add_argument("--repeat", type=int, default=3, help="measurements of luigi_tasks and psql")
    parser.add_argument("--zoomcamp-repeat", type=int, default=1, help="measurements of the zoomcamp way (slow)")
    parser.add_argument("--methods", default=",".join(METHODS), help=f"comma-separated subset of: {', '.join(METHODS)}")
    parser.add_argument("--breakdown", action="store_true", help="also measure where LoadToPostgres's time goes")
    parser.add_argument(
        "--max-other-cpu",
        type=float,
        default=0.1,
        help=f"measure again (at most {MAX_TRIES} tries) when other processes used more CPU time than"
        f" {OTHER_CPU_GRACE_S} s plus this share of the measurement's wall time",
    )
    parser.add_argument("--work", type=Path, default=WORK_DIR, help="where inputs and outputs go")
    parser.add_argument("--write-docs", action="store_true", help=f"write {DOCS_PATH.relative_to(REPO)}")
    # Children.
    parser.add_argument("--one", metavar="METHOD", help=argparse.SUPPRESS)
    parser.add_argument("--dsn", help=argparse.SUPPRESS)
    parser.add_argument("--csv", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--parquet", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--dest", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--generate", nargs=2, metavar=("FILE", "ROWS"), help=argparse.SUPPRESS)
    parser.add_argument("--make-parquet", nargs=2, metavar=("CSV", "PARQUET"), help=argparse.SUPPRESS)
    parser.add_argument("--write-binary", nargs=2, metavar=("PARQUET", "FILE"), help=argparse.SUPPRESS)
    parser.add_argument("--prepare-partition", metavar="DSN", help=argparse.SUPPRESS)
    parser.add_argument("--versions", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in args.methods if m not in METHODS]
    if unknown:
        parser.error(f"unknown method(s) {', '.join(unknown)}; choose from {', '.join(METHODS)}")
    if args.repeat < 1 or args.rows < 1 or args.zoomcamp_repeat < 1:
        parser.error("--repeat, --zoomcamp-repeat and --rows must be positive")
    return args


def child_main(args: argparse.Namespace) -> bool:
    """Run what a child was started for; False if this is the parent."""
    if args.one:
        paths = Paths(dsn=args.dsn, csv=args.csv, parquet=args.parquet, dest=args.dest)
        print(json.dumps(run_one(args.one, paths)), flush=True)
    elif args.generate:
        generate_input(Path(args.generate[0]), int(args.generate[1]))
    elif args.make_parquet:
        make_parquet(Path(args.make_parquet[0]), Path(args.make_parquet[1]))
    elif args.write_binary:
        write_binary_copy(Path(args.write_binary[0]), Path(args.write_binary[1]))
    elif args.prepare_partition:
        prepare_partition(args.prepare_partition)
    elif args.versions:
        print(json.dumps(library_versions()))
    else:
        return False
    return True


def _interrupted(signum, frame) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def _progress(done: int, total: int, round_: int, run: Run, label: str) -> None:
    print(
        f"[{done}/{total}] round {round_} {label:<40} wall {run.wall_s:7.2f} s  process {run.process_wall_s:7.2f} s"
        f"  client CPU {run.cpu_s:6.2f} s  server CPU {run.server_cpu_s:6.2f} s  peak RSS {run.rss_mb:6,.0f} MB"
        f"  other CPU {run.other_cpu_s:5.2f} s",
        file=sys.stderr,
        flush=True,
    )


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    if child_main(args):
        return 0

    args.work.mkdir(parents=True, exist_ok=True)
    csv = input_path(args.work, args.rows)
    ensure_input(csv, args.rows, script=__file__)
    stem = csv.name.removesuffix(".csv")
    paths = Paths(
        dsn="",
        csv=csv,
        parquet=args.work / f"canonical-{stem}.parquet",
        dest=args.work / f"e2e-{stem}.parquet",
    )
    # Made afresh every time, so that it is what the current converter writes.
    print(f"making {paths.parquet.name} (not timed) ...", file=sys.stderr, flush=True)
    subprocess.run(script_command(__file__, "--make-parquet", str(csv), str(paths.parquet)), cwd=REPO, check=True)
    binary = args.work / f"binary-{stem}.copy"
    if args.breakdown:
        print(f"writing {binary.name} (not timed) ...", file=sys.stderr, flush=True)
        subprocess.run(
            script_command(__file__, "--write-binary", str(paths.parquet), str(binary)), cwd=REPO, check=True
        )
    gnu_time = _has_gnu_time()
    sources = sources_snapshot()
    if not gnu_time:
        print(f"warning: no GNU time at {GNU_TIME}: psql's peak RSS will read as this process's", file=sys.stderr)

    signal.signal(signal.SIGTERM, _interrupted)
    server = Server()
    try:
        server.start()
        paths = dataclasses.replace(paths, dsn=server.dsn)
        print(f"PostgreSQL {server.sql('SHOW server_version')} on port {server.cluster.port}", file=sys.stderr)
        for path in (csv, paths.parquet, *([binary] if args.breakdown else [])):
            warm_page_cache(path)

        rounds = max(args.repeat, args.zoomcamp_repeat)
        plan: list[tuple[int, str]] = []
        for repetition in range(rounds):
            # Rotate the order each round so that no method is always first (or last).
            shift = repetition % len(args.methods)
            order = args.methods[shift:] + args.methods[:shift]
            times = {m: args.zoomcamp_repeat if m == ZOOMCAMP else args.repeat for m in order}
            plan += [(repetition, m) for m in order if repetition < times[m]]
        steps = list(BREAKDOWN) if args.breakdown else []
        total = len(plan) + len(steps) * args.repeat

        warm_up = measure(PSQL, server, paths, args.rows, gnu_time)
        print(f"warm-up (not timed): psql \\copy in {warm_up.wall_s:.2f} s", file=sys.stderr, flush=True)
        runs: list[Run] = []
        discarded: list[str] = []
        for repetition, method in plan:
            once = functools.partial(measure, method, server, paths, args.rows, gnu_time)
            run = quiet(once, METHODS[method], args.max_other_cpu, discarded)
            runs.append(run)
            _progress(len(runs), total, repetition + 1, run, METHODS[method])
        breakdown_runs: list[Run] = []
        for repetition in range(args.repeat if steps else 0):
            for step in steps:
                once = functools.partial(measure_breakdown, step, server, paths, binary, args.rows, gnu_time)
                run = quiet(once, step, args.max_other_cpu, discarded)
                breakdown_runs.append(run)
                _progress(len(runs) + len(breakdown_runs), total, repetition + 1, run, step)

        parent_rss_mb = maxrss_mb()
        others = [r.other_cpu_s for r in runs + breakdown_runs]
        print(f"other processes' CPU time during a measurement: {_others_note(others)}", file=sys.stderr)
        changed = changed_sources(sources)
        if changed:
            print(f"warning: changed during the run, so rows may mix versions: {', '.join(changed)}", file=sys.stderr)
        python_runs = [r for r in runs + breakdown_runs if r.rss_after_import_mb is not None]
        floor_mb = min((r.rss_after_import_mb for r in python_runs), default=float("inf"))
        if parent_rss_mb >= floor_mb:
            print(
                f"warning: this process peaked at {parent_rss_mb:.0f} MB, not below the smallest child RSS after"
                f" imports ({floor_mb:.0f} MB): children inherit that high-water mark, so small peaks may read high",
                file=sys.stderr,
            )
        summaries = summarise(runs, METHODS)
        breakdown = summarise(breakdown_runs, BREAKDOWN)
        print(results_table(summaries, args.rows))
        print()
        print("\n".join(goal_checks(summaries)))
        if breakdown:
            print()
            print(breakdown_table(breakdown))
        if args.write_docs:
            command = shlex.join(["python", "bench/postgres_bench.py", *argv])
            env = environment(server, parent_rss_mb, gnu_time, others, discarded, changed)
            binary_mb = binary.stat().st_size / MB if args.breakdown else 0.0
            text = docs_text(summaries, breakdown, command, env, args, csv.stat().st_size / MB, binary_mb)
            DOCS_PATH.parent.mkdir(parents=True, exist_ok=True)
            DOCS_PATH.write_text(text, encoding="utf-8")
            print(f"\nwrote {DOCS_PATH.relative_to(REPO)}", file=sys.stderr)
    finally:
        server.remove()
        binary.unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
