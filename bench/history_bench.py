"""The whole history at scale: every month of every service into lake, postgres and duckdb through the real graph.

Serves tiny generated months (--rows rows each) of every service, from its first month to two months before the
current one (about 620 months), from the tests' source server (tests/source_server.py, CloudFront's 403 for a
month not published yet), and a throwaway PostgreSQL (tests/postgres_cluster.py). Then, each a whole process:

  first run   bin/backfill all 2009-01 latest --sinks lake,postgres,duckdb: every task runs (download,
              conversion, both loads), once; the tasks' own run() times come from the run history
              (luigi_tasks/history.py), the rest of the wall time is what each task costs beyond its work
  no-op       the same command again: nothing to do
  dry run     the same with --dry-run: the plan printed
  status      bin/status all 2009-01 latest --sinks lake,postgres,duckdb, as text and with --html

--profile FILE runs the first run under cProfile and writes its statistics there (the figures are then of a
profiled run: measure without it).

    python bench/history_bench.py [--repeat 3] [--start 2009-01] [--write-docs] [--profile FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from common import (  # noqa: E402
    history_server,
    months_back,
    run_stamp,
    serve_history,
    source_settings,
    spread,
    verdict,
    write_docs_page,
)

DOCS_PATH = REPO / "docs" / "history-benchmark.md"
ROWS_PER_MONTH = 20
SINKS = "lake,postgres,duckdb"
GOAL_SECONDS = 3.0
ANALYSIS = "\n## Where the time per task goes\n"  # --write-docs keeps this section of the page as it is


def backfill(start: str, *options: str) -> list[str]:
    return [str(REPO / "bin/backfill"), "all", start, "latest", "--sinks", SINKS, *options]


def status(start: str, *options: str) -> list[str]:
    return [str(REPO / "bin/status"), "all", start, "latest", "--sinks", SINKS, *options]


def timed(command: list[str], env: dict[str, str], log: Path) -> float:
    began = time.perf_counter()
    with open(log, "w") as out:
        done = subprocess.run(command, env=env, cwd=REPO, stdout=out, stderr=subprocess.STDOUT)
    seconds = time.perf_counter() - began
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} exited {done.returncode}:\n{log.read_text()[-3000:]}")
    return seconds


def task_times(history: Path) -> dict[str, tuple[int, float]]:
    """Per task family: how many ran and the sum of their run() times, from the run history."""
    with sqlite3.connect(history) as db:
        found = db.execute("SELECT task_family, COUNT(*), SUM(seconds) FROM runs GROUP BY task_family").fetchall()
    return {family: (count, seconds or 0.0) for family, count, seconds in found}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--rows", type=int, default=ROWS_PER_MONTH)
    parser.add_argument("--start", default="2009-01", help="first month asked for (a trial: a later one)")
    parser.add_argument("--profile", metavar="FILE", help="run the first run under cProfile, its statistics here")
    parser.add_argument("--write-docs", action="store_true")
    args = parser.parse_args()
    from tests.postgres_cluster import PostgresCluster

    stamp = run_stamp()
    load_before = os.getloadavg()[0]
    stop = months_back(2)
    server = history_server()
    cluster = PostgresCluster().start()
    base = Path(tempfile.mkdtemp(prefix="history-bench-"))
    try:
        lake, work, logs = base / "lake", base / "work", base / "logs"
        work.mkdir()
        logs.mkdir()
        print(f"serving every month of every service up to {stop:%Y-%m} ...", file=sys.stderr, flush=True)
        months = serve_history(server, work, stop, args.rows)
        config = base / "luigi.cfg"
        history = base / "history.sqlite"
        config.write_text(
            source_settings(server) + f"[lake]\nroot = {lake}\n\n[postgres]\ndsn = {cluster.dsn}\n\n"
            f"[history]\npath = {history}\n"
        )
        env = {**os.environ, "LUIGI_CONFIG_PATH": str(config), "PGPASSWORD": cluster.password}
        first = backfill(args.start)
        if args.profile:
            first = [sys.executable, "-m", "cProfile", "-o", args.profile, "-m", "luigi", "--module", "luigi_tasks",
                     "Backfill", "--local-scheduler", "--services", "all", "--start", args.start, "--stop", "latest",
                     "--sinks", SINKS]  # fmt: skip
            env["PYTHONPATH"] = str(REPO)
        print("first run ...", file=sys.stderr, flush=True)
        first_seconds = timed(first, env, logs / "first.log")
        families = task_times(history)
        print(f"first run: {first_seconds:.1f} s, {json.dumps(families)}", file=sys.stderr, flush=True)
        checks = {
            "no-op rerun": backfill(args.start),
            "--dry-run": backfill(args.start, "--dry-run"),
            "bin/status": status(args.start),
            "bin/status --html": status(args.start, "--html", str(base / "status.html")),
        }
        times: dict[str, list[float]] = {name: [] for name in checks}
        for i in range(args.repeat):
            for name, command in checks.items():
                times[name].append(timed(command, env, logs / f"check-{i}.log"))
                print(f"{name}: {times[name][-1]:.2f} s", file=sys.stderr, flush=True)
        again = task_times(history)
        assert all(again[family] == families[family] for family in families if family != "Backfill"), "tasks ran"
        text = report(months, stop, args, first_seconds, families, times)
    finally:
        server.stop()
        cluster.remove()
        shutil.rmtree(base, ignore_errors=True)
    print(text)
    if args.write_docs:
        command = f"python bench/history_bench.py --repeat {args.repeat} --write-docs"
        kept = DOCS_PATH.read_text() if DOCS_PATH.exists() else ""  # the written analysis below the figures stays
        write_docs_page(DOCS_PATH, "Benchmark: the whole history at scale", text, command, stamp, load_before)
        if ANALYSIS in kept:
            DOCS_PATH.write_text(DOCS_PATH.read_text() + kept[kept.index(ANALYSIS) :])


def report(months, stop, args, first_seconds, families, times) -> str:
    tasks = sum(count for count, _ in families.values())
    work = sum(seconds for _, seconds in families.values())
    lines = [
        f"Every service from its first month to {stop:%Y-%m}: {months} months of {args.rows} rows each, served by "
        "tests/source_server.py on 127.0.0.1, into a local lake, a throwaway PostgreSQL and DuckDB. Each run is a "
        f"whole process: `bin/backfill all {args.start} latest --sinks {SINKS}` (local scheduler, one worker) and "
        f"`bin/status all {args.start} latest --sinks {SINKS}`.",
        "",
        f"First run: {first_seconds:.1f} s for {tasks:,} tasks; their own run() times (the run history) add up to "
        f"{work:.1f} s, so each task costs {(first_seconds - work) / tasks * 1000:.0f} ms beyond its work "
        f"({first_seconds - work:.1f} s in all: scheduling, completeness checks, the process's start).",
        "",
        "| task | runs | run() s in all | run() ms each |",
        "|---|---|---|---|",
    ]
    for family, (count, seconds) in sorted(families.items(), key=lambda item: -item[1][1]):
        lines.append(f"| {family} | {count:,} | {seconds:.1f} | {seconds / count * 1000:.0f} |")
    lines += ["", "| over the whole range | wall s (median) | min-max | goal |", "|---|---|---|---|"]
    for name, seconds in times.items():
        met = verdict(statistics.median(seconds) <= GOAL_SECONDS)
        lines.append(f"| {name} | {spread(seconds)} | <= {GOAL_SECONDS:.0f} s: {met} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
