"""One month end to end: from the source server through download, conversion and every local sink, against the
sum of each stage's best peer.

luigi_tasks runs the README's way, as one whole process:

    luigi --module luigi_tasks IngestMonth --service yellow --month 2021-01 --sinks lake,postgres,duckdb

with a fresh lake and empty sinks each time, the month served as .csv.gz by an HTTP server on 127.0.0.1
(tests/source_server.py) and a throwaway PostgreSQL cluster (tests/postgres_cluster.py). Where its time goes comes
from the run history (each task's seconds).

Each stage's peers also run as whole processes, on the same inputs:

  download     curl -o; wget -O
  convert      every method of bench/convert_bench.py but luigi_tasks' own (the zoomcamp way, pandas, DuckDB,
               polars), run by that script's --one
  postgres     psql \\copy of the .csv.gz (FROM PROGRAM 'gzip -dc'), into a pre-created table
  duckdb       DuckDB's own CREATE TABLE ... AS SELECT * FROM read_parquet() of the zoomcamp way's Parquet

The goal: luigi_tasks' whole month within 1.2x the sum of the fastest peer of each stage.

    python bench/month_bench.py                  # 1,369,765 rows (yellow 2021-01), 3 repeats
    python bench/month_bench.py --write-docs     # ... and write docs/month-benchmark.md
    python bench/month_bench.py --rows 50000 --repeat 1
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import (
    MONTH,
    REPO,
    WORK_DIR,
    YELLOW_2021_01_ROWS,
    ensure_input,
    input_path,
    machine,
    maxrss_mb,
    run_stamp,
    script_command,
    verdict,
    warm_page_cache,
)
from convert_bench import METHODS as CONVERT_METHODS
from convert_bench import SUBJECT as CONVERT_SUBJECT
from postgres_bench import COPY_TABLE, Server

DOCS_PATH = REPO / "docs" / "month-benchmark.md"
GOAL_RATIO = 1.2
SINKS = "lake,postgres,duckdb"
# The run history's task families, by stage (the zone lookup's tasks count with their stage).
FAMILIES = {
    "download": ("DownloadTripData", "DownloadZones"),
    "convert": ("ToParquet", "ZonesToParquet"),
    "postgres": ("LoadToPostgres", "LoadZonesToPostgres"),
    "duckdb": ("LoadToDuckDB", "LoadZonesToDuckDB"),
}
CSV_TEMPLATE = "/csv/{service}/{service}_tripdata_{year}-{month}.csv.gz"  # [tlc] csv_url's path


def timed(command: list[str], **kwargs) -> float:
    """Run `command` to its end; its wall time in seconds. A failure stops the benchmark."""
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, **kwargs)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command[:4])} ... failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
    return wall


@dataclasses.dataclass
class Setup:
    work: Path
    csv_gz: Path
    rows: int
    url: str
    server: Server
    sinks: str

    @property
    def stages(self) -> list[str]:
        return ["download", "convert", *(sink for sink in self.sinks.split(",") if sink != "lake")]

    def luigi_config(self, run: Path, source_base: str) -> Path:
        config = run / "luigi.cfg"
        config.write_text(
            f"[tlc]\nsource = csv\ncsv_url = {source_base}{CSV_TEMPLATE}\n"
            f"zones_url = {source_base}/misc/taxi_zone_lookup.csv\n\n"
            f"[lake]\nroot = {run / 'lake'}\n\n[history]\npath = {run / 'history.sqlite'}\n\n"
            f"[postgres]\ndsn = {self.server.dsn}\n\n[duckdb]\npath = {run / 'taxi_rides_ny.duckdb'}\n\n"
            "[progress]\ninterval = 3600\n"
        )
        return config


def run_luigi(setup: Setup, source_base: str) -> dict[str, float]:
    """The whole month as one luigi command; its wall time and each stage's seconds from the run history."""
    setup.server.reset()
    run = Path(tempfile.mkdtemp(prefix="month-", dir=setup.work))
    try:
        env = {**setup.server.env, "LUIGI_CONFIG_PATH": str(setup.luigi_config(run, source_base))}
        luigi = str(Path(sys.executable).with_name("luigi"))
        command = [luigi, "--module", "luigi_tasks", "IngestMonth", "--service", "yellow", "--month",
                   f"{MONTH:%Y-%m}", "--sinks", setup.sinks, "--local-scheduler"]  # fmt: skip
        wall = timed(command, cwd=REPO, env=env)
        with sqlite3.connect(run / "history.sqlite") as history:
            seconds = dict(history.execute("SELECT task_family, sum(seconds) FROM runs GROUP BY task_family"))
        rows = setup.server.count(f"yellow_tripdata WHERE source_month = '{MONTH}'")
        if rows != setup.rows:
            raise SystemExit(f"luigi_tasks loaded {rows:,} rows into PostgreSQL, the month has {setup.rows:,}")
        stages = {stage: sum(seconds.get(f, 0.0) for f in FAMILIES[stage]) for stage in setup.stages}
        return {"whole": wall, **stages}
    finally:
        shutil.rmtree(run, ignore_errors=True)


def run_peers(setup: Setup) -> dict[str, dict[str, float]]:
    """Each stage's peers, each a whole process; stage -> peer -> wall seconds."""
    out = setup.work / "peer"
    out.mkdir(exist_ok=True)
    downloaded = out / setup.csv_gz.name
    walls: dict[str, dict[str, float]] = {stage: {} for stage in setup.stages}
    walls["download"]["curl"] = timed(["curl", "-sSfo", str(downloaded), setup.url])
    walls["download"]["wget"] = timed(["wget", "-q", "-O", str(downloaded), setup.url])
    parquet = out / "zoomcamp.parquet"
    for method in CONVERT_METHODS:
        if method == CONVERT_SUBJECT:
            continue
        dest = parquet if method == "zoomcamp" else out / f"{method}.parquet"
        command = script_command(str(REPO / "bench/convert_bench.py"), "--one", method, str(downloaded),
                                 "--dest", str(dest), "--expect-rows", str(setup.rows))  # fmt: skip
        walls["convert"][CONVERT_METHODS[method]] = timed(command, cwd=REPO)
    setup.server.reset(create_copy_table=True)
    copy = f"\\copy {COPY_TABLE} FROM PROGRAM 'gzip -dc {downloaded}' WITH (FORMAT csv, HEADER true)"
    walls["postgres"]["psql \\copy"] = timed(["psql", setup.server.dsn, "-X", "-c", copy], env=setup.server.env)
    if setup.server.count(COPY_TABLE) != setup.rows:
        raise SystemExit(f"psql \\copy loaded {setup.server.count(COPY_TABLE):,} rows, the month has {setup.rows:,}")
    if "duckdb" not in walls:
        return walls
    database = out / "peer.duckdb"
    database.unlink(missing_ok=True)
    load = (
        "import duckdb, sys; c = duckdb.connect(sys.argv[1]);"
        " c.execute('CREATE TABLE yellow AS SELECT * FROM read_parquet(?)', [sys.argv[2]]);"
        " n = c.execute('SELECT count(*) FROM yellow').fetchone()[0]; assert n == int(sys.argv[3]), n"
    )
    walls["duckdb"]["DuckDB read_parquet"] = timed([sys.executable, "-c", load, str(database), str(parquet),
                                                    str(setup.rows)])  # fmt: skip
    return walls


def report(luigi_runs: list[dict[str, float]], peer_runs: list[dict[str, dict[str, float]]], setup: Setup) -> str:
    median = statistics.median
    luigi = {key: median(run[key] for run in luigi_runs) for key in luigi_runs[0]}
    stages = setup.stages
    peers = {stage: {p: median(run[stage][p] for run in peer_runs) for p in peer_runs[0][stage]} for stage in stages}
    best = {stage: min(peers[stage].items(), key=lambda item: item[1]) for stage in stages}
    best_sum = sum(wall for _, wall in best.values())
    ratio = luigi["whole"] / best_sum
    lines = [
        "| stage | luigi_tasks s (task time, from the run history) | peers, whole processes: wall s | best peer s |",
        "|---|---|---|---|",
    ]
    for stage in stages:
        shown = ", ".join(f"{name} {wall:.2f}" for name, wall in sorted(peers[stage].items(), key=lambda i: i[1]))
        lines.append(f"| {stage} | {luigi[stage]:.2f} | {shown} | {best[stage][1]:.2f} ({best[stage][0]}) |")
    scheduling = luigi["whole"] - sum(luigi[stage] for stage in stages)
    lines += [
        f"| luigi start-up, scheduling, done-checks, zone lookup's other steps | {scheduling:.2f} | | |",
        f"| **whole month** | **{luigi['whole']:.2f}** (one `luigi` process) | |"
        f" **{best_sum:.2f}** (sum of the best) |",
        "",
        f"- luigi_tasks' whole month is {ratio:.2f}x the sum of the best peers (goal <= {GOAL_RATIO}x):"
        f" {verdict(ratio <= GOAL_RATIO)}",
        f"- {setup.rows:,} rows, {setup.csv_gz.stat().st_size / 2**20:.0f} MiB of .csv.gz;"
        f" median of {len(luigi_runs)} runs each, luigi_tasks and the peers interleaved.",
    ]
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=YELLOW_2021_01_ROWS)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--sinks", default=SINKS, help=f"IngestMonth's --sinks (default {SINKS})")
    parser.add_argument("--write-docs", action="store_true", help=f"write {DOCS_PATH.relative_to(REPO)}")
    args = parser.parse_args(argv)
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    from tests.source_server import SourceServer

    WORK_DIR.mkdir(parents=True, exist_ok=True)
    csv_gz = input_path(WORK_DIR, args.rows, gz=True)
    ensure_input(csv_gz, args.rows, str(REPO / "bench/convert_bench.py"))  # its --generate makes the input
    warm_page_cache(csv_gz)
    stamp = run_stamp()
    source = SourceServer().start()
    server = Server()
    server.start()
    work = Path(tempfile.mkdtemp(prefix="month-bench-", dir=WORK_DIR))
    try:
        url = source.add(f"/csv/yellow/yellow_tripdata_{MONTH:%Y-%m}.csv.gz", csv_gz.read_bytes())
        source.add("/misc/taxi_zone_lookup.csv", (REPO / "tests/data/taxi_zone_lookup.csv").read_bytes())
        setup = Setup(work=work, csv_gz=csv_gz, rows=args.rows, url=url, server=server, sinks=args.sinks)
        luigi_runs, peer_runs = [], []
        for index in range(args.repeat):
            luigi_runs.append(run_luigi(setup, source.base_url))
            peer_runs.append(run_peers(setup))
            print(f"run {index + 1}: luigi_tasks {json.dumps(luigi_runs[-1])}", file=sys.stderr)
            print(f"run {index + 1}: peers {json.dumps(peer_runs[-1])}", file=sys.stderr)
        table = report(luigi_runs, peer_runs, setup)
    finally:
        source.stop()
        server.remove()
        shutil.rmtree(work, ignore_errors=True)
    print(table)
    if args.write_docs:
        env = "\n".join(f"- {key}: {value}" for key, value in {**stamp, **machine(maxrss_mb())}.items())
        DOCS_PATH.write_text(
            "# One month end to end\n\n"
            "Yellow 2021-01 (synthetic, seeded: `luigi_tasks.synthetic.write_trip_csv`) from an HTTP server on"
            " 127.0.0.1 through download, conversion and the local sinks (PostgreSQL, DuckDB), by luigi_tasks as one"
            f" `luigi --module luigi_tasks IngestMonth --sinks {args.sinks} --local-scheduler` process, against"
            " the sum of the fastest peer of each stage, each a whole process (see bench/month_bench.py).\n\n"
            f"{table}\n\n### How to reproduce\n\n```\npython bench/month_bench.py --write-docs\n```\n\n"
            f"### Environment\n\n{env}\n"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
