"""A no-op rerun of a completed backfill: Backfill's bulk checks against luigi's per-task complete().

Fills a lake and a throwaway PostgreSQL with tiny months (4 services x 36 months, every sink), then
times, each in a fresh process:

  Backfill   luigi.build([Backfill(services=all, start, stop, sinks=lake,postgres)]): one listing per
             service for the lake, one marker query per service for PostgreSQL
  per task   luigi.build([IngestMonth(...) for every month]): luigi asks every task's complete(), which
             is what RangeMonthly or a list of tasks does

Round trips to PostgreSQL are the statements the server logged (log_statement = all) during the run;
lake round trips are directory listings (os.scandir calls, counted in the child). bench/lake_bench.py
measures the same rerun into every sink, with the lake local and on GCS.

    python bench/noop_backfill_bench.py [--months 36] [--repeat 3] [--write-docs]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from common import spread  # noqa: E402

from luigi_tasks.catalog import SERVICES, next_month  # noqa: E402
from tests.postgres_cluster import PostgresCluster  # noqa: E402

DOCS_PATH = REPO / "docs" / "noop-backfill-benchmark.md"
START = dt.date(2019, 2, 1)  # the first month of fhvhv, so every service has every month
ROWS_PER_MONTH = 20
GOAL_SECONDS = 3.0

# Runs in the child: count directory listings, run the build, print JSON.
_CHILD = r"""
import json, os, sys, time
counts = {"listings": 0}
_scandir = os.scandir
def counting_scandir(*args, **kwargs):
    counts["listings"] += 1
    return _scandir(*args, **kwargs)
os.scandir = counting_scandir
import datetime as dt
import luigi
from luigi_tasks import Backfill, IngestMonth
from luigi_tasks.tasks.backfill import months_between
mode, start, stop = sys.argv[1], dt.date.fromisoformat(sys.argv[2]), dt.date.fromisoformat(sys.argv[3])
if mode == "backfill":
    tasks = [Backfill(services="all", start=start, stop=stop, sinks="lake,postgres")]
else:
    tasks = [IngestMonth(service=s, month=m, sinks="lake,postgres")
             for s in ("yellow", "green", "fhv", "fhvhv") for m in months_between(start, stop)]
began = time.perf_counter()
result = luigi.build(tasks, local_scheduler=True, detailed_summary=True, log_level="WARNING")
seconds = time.perf_counter() - began
assert "Did not run any tasks" in result.summary_text, result.summary_text
print(json.dumps({"seconds": seconds, "listings": counts["listings"]}))
"""


def fill(cluster: PostgresCluster, lake: Path, stop: dt.date) -> None:
    """Tiny months for every service and month, in the lake (with their manifests) and in PostgreSQL."""
    from luigi_tasks.catalog import ZONES
    from luigi_tasks.convert import to_canonical_parquet
    from luigi_tasks.files import fingerprints_of
    from luigi_tasks.lake import Lake, LakeEntry, canonical_key
    from luigi_tasks.postgres import load_month, load_zones
    from luigi_tasks.synthetic import write_trip_csv
    from luigi_tasks.tasks.lake import lake_file

    work = lake.parent / "raw"
    work.mkdir(exist_ok=True)
    store = Lake(str(lake))

    def convert(raw: Path, dataset, month: dt.date | None) -> tuple[Path, str]:
        key = canonical_key(dataset, month)
        manifest = to_canonical_parquet(raw, store.local_path(key), dataset=dataset, month=month, source_url="x")
        entry = LakeEntry(manifest, fingerprints_of(store.local_path(key)))
        store.write_entry(key, entry)
        return store.local_path(key), lake_file(entry)

    month = START
    while month <= stop:
        for name, dataset in SERVICES.items():
            raw = write_trip_csv(work / f"{name}-{month:%Y-%m}.csv", dataset, month, ROWS_PER_MONTH, seed=month.month)
            parquet, fingerprint = convert(raw, dataset, month)
            load_month(cluster.dsn, parquet, dataset=dataset, month=month, marker_table="table_updates",
                       lake_file=fingerprint)  # fmt: skip
        month = next_month(month)
    zones, fingerprint = convert(REPO / "tests/data/taxi_zone_lookup.csv", ZONES, None)
    load_zones(cluster.dsn, zones, marker_table="table_updates", lake_file=fingerprint)


def logged_statements(cluster: PostgresCluster) -> int:
    log = (cluster.base / "server.log").read_text(errors="replace")
    return log.count("LOG:  statement:")


def measure(mode: str, stop: dt.date, cluster: PostgresCluster, env: dict[str, str]) -> dict:
    before = logged_statements(cluster)
    child = subprocess.run(
        [sys.executable, "-c", _CHILD, mode, START.isoformat(), stop.isoformat()],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    )
    result = json.loads(child.stdout.strip().splitlines()[-1])
    result["statements"] = logged_statements(cluster) - before
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--months", type=int, default=36)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--write-docs", action="store_true")
    args = parser.parse_args()
    stop = START
    for _ in range(args.months - 1):
        stop = next_month(stop)

    cluster = PostgresCluster().start()
    base = Path(tempfile.mkdtemp(prefix="noop-backfill-"))
    try:
        os.environ["PGPASSWORD"] = cluster.password
        lake = base / "lake"
        print(f"filling {len(SERVICES)} services x {args.months} months into {lake} and PostgreSQL ...", flush=True)
        fill(cluster, lake, stop)
        config = base / "luigi.cfg"
        config.write_text(
            f"[lake]\nroot = {lake}\n\n[postgres]\ndsn = {cluster.dsn}\n\n[history]\npath = {base}/history.sqlite\n"
        )
        env = {**os.environ, "LUIGI_CONFIG_PATH": str(config)}
        with cluster_statement_log(cluster):
            results: dict[str, list[dict]] = {"backfill": [], "per-task": []}
            for _ in range(args.repeat):
                for mode in results:
                    results[mode].append(measure(mode, stop, cluster, env))
        report(results, args, stop)
    finally:
        cluster.remove()
        subprocess.run(["rm", "-rf", str(base)], check=False)


class cluster_statement_log:  # noqa: N801 - used as a context manager
    """Turn on logging of every statement while measuring."""

    def __init__(self, cluster: PostgresCluster) -> None:
        self.cluster = cluster

    def _set(self, value: str) -> None:
        import psycopg2

        conn = psycopg2.connect(self.cluster.dsn)
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(f"ALTER SYSTEM SET log_statement = '{value}'")
            cur.execute("SELECT pg_reload_conf()")
        conn.close()

    def __enter__(self) -> None:
        self._set("all")

    def __exit__(self, *exc: object) -> None:
        self._set("none")


def report(results: dict[str, list[dict]], args: argparse.Namespace, stop: dt.date) -> None:
    tasks = len(SERVICES) * args.months
    lines = [
        f"No-op rerun of a completed backfill: {len(SERVICES)} services x {args.months} months "
        f"({START:%Y-%m}..{stop:%Y-%m}, {tasks} months), sinks lake and postgres, every month done.",
        "",
        "| how | wall s (median) | wall s (min-max) | PostgreSQL statements | lake directory listings |",
        "|---|---|---|---|---|",
    ]
    for mode, runs in results.items():
        lines.append(
            f"| {'Backfill (bulk checks)' if mode == 'backfill' else 'IngestMonth per task (luigi complete())'} "
            f"| {spread([r['seconds'] for r in runs])} "
            f"| {max(r['statements'] for r in runs)} | {max(r['listings'] for r in runs)} |"
        )
    ours = statistics.median(r["seconds"] for r in results["backfill"])
    naive = statistics.median(r["seconds"] for r in results["per-task"])
    statements = max(r["statements"] for r in results["backfill"])
    lines += [
        "",
        f"- Backfill: {ours:.2f} s (goal <= {GOAL_SECONDS:.0f} s: {'met' if ours <= GOAL_SECONDS else 'NOT met'}); "
        f"{naive / ours:.1f}x faster than asking every task.",
        f"- PostgreSQL: {statements} statements for {len(SERVICES)} services "
        "(one marker query per service, plus one for the zone lookup's marker).",
        "- Lake: one recursive listing per service (a directory listing for the service and one per year).",
    ]
    text = "\n".join(lines)
    print(text)
    if args.write_docs:
        DOCS_PATH.write_text(
            "# Benchmark: a no-op rerun of a completed backfill\n\n"
            f"`python bench/noop_backfill_bench.py --months {args.months} --repeat {args.repeat} --write-docs`, "
            f"{dt.date.today():%Y-%m-%d}, {os.cpu_count()} cores. Each run is a fresh process with the local "
            "scheduler against a throwaway PostgreSQL 15 on 127.0.0.1; months hold "
            f"{ROWS_PER_MONTH} rows each (the checks do not read the data).\n\n" + text + "\n"
        )
        print(f"wrote {DOCS_PATH.relative_to(REPO)}")


if __name__ == "__main__":
    main()
