"""The lake on object storage: a month's conversion and PostgreSQL load, and a no-op rerun into every sink.

  month   ToParquet and LoadToPostgres of one generated yellow month (--rows, default the size of 2021-01),
          with the lake on fake-gcs-server (gs://) and on the local disk: wall time of each step in a fresh
          process, and the ratio
  noop    a completed backfill of 4 services x --months tiny months into lake, postgres, gcs, bigquery and s3,
          rerun: wall time of the rerun (luigi.build in a fresh process), the bytes it read from the lake
          and how many data files it opened, with the lake local and on GCS

Everything runs on 127.0.0.1: the source files from a local HTTP server, PostgreSQL 15, fake-gcs-server,
bqemulator and moto, started here (the test suite's own helpers).

    python bench/lake_bench.py [--rows N] [--months 36] [--repeat 3] [--write-docs]
"""

from __future__ import annotations

import argparse
import datetime as dt
import gzip
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from common import YELLOW_2021_01_ROWS, machine, maxrss_mb, run_stamp  # noqa: E402

DOCS_PATH = REPO / "docs" / "lake-benchmark.md"
START = dt.date(2019, 2, 1)  # fhvhv's first month, so every service has every month
NOOP_ROWS = 20
SINKS = "lake,postgres,gcs,bigquery,s3"
GOAL_NOOP_SECONDS = 3.0

# Runs in a fresh process: one luigi.build, with the lake's reads counted; prints JSON.
_CHILD = r"""
import json, sys, time
import luigi
from luigi_tasks.lake import Lake
reads = {"bytes": 0, "data_files": 0}
_read_bytes, _open_input, _local_copy = Lake.read_bytes, Lake.open_input, Lake.local_copy
def read_bytes(self, key):
    data = _read_bytes(self, key)
    reads["bytes"] += len(data or b"")
    return data
def open_input(self, key):
    reads["data_files"] += 1
    return _open_input(self, key)
def local_copy(self, key):
    reads["data_files"] += 1
    return _local_copy(self, key)
Lake.read_bytes, Lake.open_input, Lake.local_copy = read_bytes, open_input, local_copy
task = luigi.task.Register.get_task_cls(sys.argv[1]).from_str_params(json.loads(sys.argv[2]))
began = time.perf_counter()
result = luigi.build([task], local_scheduler=True, detailed_summary=True, log_level="WARNING")
seconds = time.perf_counter() - began
assert result.scheduling_succeeded, result.summary_text
reads.update(seconds=seconds, ran="Did not run any tasks" not in result.summary_text)
print(json.dumps(reads))
"""


def child(task: str, params: dict, env: dict[str, str]) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", "import luigi_tasks\n" + _CHILD, task, json.dumps(params)],
        env=env, cwd=REPO, capture_output=True, text=True,
    )  # fmt: skip
    if out.returncode != 0:
        raise SystemExit(f"{task} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


class Services:
    """The source server, PostgreSQL and the three emulators, started once."""

    def __init__(self, base: Path) -> None:
        from tests.emulators import PROJECT, BigQueryEmulator, FakeGcsServer, MotoS3Server
        from tests.postgres_cluster import PostgresCluster
        from tests.source_server import SourceServer

        self.source = SourceServer().start()
        self.postgres = PostgresCluster().start()
        self.gcs = FakeGcsServer(base / "gcs")
        self.gcs.start()
        self.bigquery = BigQueryEmulator(base / "bigquery", gcs_root=self.gcs.root)
        self.bigquery.start()
        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's server logs every request
        self.s3 = MotoS3Server()
        self.s3.start()
        self.project = PROJECT
        self.env = {
            **os.environ,
            "PGPASSWORD": self.postgres.password,
            "STORAGE_EMULATOR_HOST": self.gcs.url,
            "BIGQUERY_EMULATOR_HOST": self.bigquery.url,
            "GOOGLE_CLOUD_PROJECT": PROJECT,
            "AWS_ENDPOINT_URL": self.s3.url,
            "AWS_ACCESS_KEY_ID": "bench",
            "AWS_SECRET_ACCESS_KEY": "bench",
            "AWS_DEFAULT_REGION": "us-east-1",
        }
        os.environ.update(self.env)

    def bucket(self, name: str) -> str:
        import boto3
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import bigquery, storage

        storage.Client(project=self.project, credentials=AnonymousCredentials()).create_bucket(name)
        boto3.client("s3").create_bucket(Bucket=name.replace("_", "-"))
        bigquery.Client(project=self.project, credentials=AnonymousCredentials(),
                        client_options={"api_endpoint": self.bigquery.url}).create_dataset(name)  # fmt: skip
        return name

    def config(self, path: Path, root: str, name: str) -> dict[str, str]:
        base = self.source.base_url
        path.write_text(
            f"[tlc]\ncsv_url = {base}/csv/{{service}}/{{service}}_tripdata_{{year}}-{{month}}.csv.gz\n"
            f"zones_url = {base}/misc/taxi_zone_lookup.csv\n\n"
            f"[lake]\nroot = {root}\nscratch = {path.parent / 'scratch'}\n\n"
            f"[postgres]\ndsn = {self.postgres.dsn.replace('dbname=postgres', 'dbname=' + name)}\n\n"
            f"[history]\npath = {path.parent / 'history.sqlite'}\n\n"
            f"[gcp]\nproject = {self.project}\nbucket = {name}\ndataset = {name}\n\n"
            f"[s3]\nbucket = {name.replace('_', '-')}\n"
        )
        import psycopg2

        admin = psycopg2.connect(self.postgres.dsn)
        admin.autocommit = True
        admin.cursor().execute(f"CREATE DATABASE {name}")
        admin.close()
        return {**self.env, "LUIGI_CONFIG_PATH": str(path)}

    def serve_month(self, service: str, month: dt.date, csv_gz: bytes) -> None:
        self.source.add(f"/csv/{service}/{service}_tripdata_{month:%Y-%m}.csv.gz", csv_gz)

    def serve_zones(self) -> None:
        self.source.add("/misc/taxi_zone_lookup.csv", (REPO / "tests/data/taxi_zone_lookup.csv").read_bytes())

    def stop(self) -> None:
        self.source.stop()
        self.gcs.stop()
        self.bigquery.stop()
        self.s3.stop()
        self.postgres.remove()


def tiny_months(services: Services, work: Path, stop: dt.date) -> None:
    from luigi_tasks.catalog import SERVICES, next_month
    from luigi_tasks.synthetic import write_trip_csv

    month = START
    while month <= stop:
        for name, dataset in SERVICES.items():
            csv = write_trip_csv(work / f"{name}-{month:%Y-%m}.csv", dataset, month, NOOP_ROWS, seed=month.month)
            services.serve_month(name, month, gzip.compress(csv.read_bytes(), mtime=0))
        month = next_month(month)
    services.serve_zones()


def lake_bytes(env: dict[str, str], root: str) -> int:
    code = "import json, os, sys\nfrom luigi_tasks.lake import Lake\nprint(sum(Lake(sys.argv[1]).list('').values()))"
    out = subprocess.run([sys.executable, "-c", code, root], env=env, cwd=REPO, capture_output=True, text=True)
    return int(out.stdout.strip() or 0)


def bench_noop(services: Services, base: Path, months: int, repeat: int) -> list[dict]:
    from luigi_tasks.catalog import next_month

    stop = START
    for _ in range(months - 1):
        stop = next_month(stop)
    tiny_months(services, base, stop)
    params = {"services": "all", "start": f"{START:%Y-%m}", "stop": f"{stop:%Y-%m}", "sinks": SINKS}
    rows = []
    for kind in ("local", "gcs"):
        name = services.bucket(f"noop_{kind}")
        root = str(base / kind / "lake") if kind == "local" else f"gs://{name}/lake"
        (base / kind).mkdir(exist_ok=True)
        env = services.config(base / kind / "luigi.cfg", root, name)
        print(f"filling {kind} lake and every sink ({months} months x 4 services) ...", flush=True)
        fill = child("Backfill", params, env)
        assert fill["ran"], "the fill ran nothing"
        runs = [child("Backfill", params, env) for _ in range(repeat)]
        assert not any(r["ran"] for r in runs), "a no-op rerun ran tasks"
        walls = [r["seconds"] for r in runs]
        rows.append({
            "lake": kind, "months": months * 4, "lake_mb": lake_bytes(env, root) / 1e6,
            "median": statistics.median(walls), "min": min(walls), "max": max(walls),
            "bytes_read": max(r["bytes"] for r in runs), "data_files": max(r["data_files"] for r in runs),
        })  # fmt: skip
    return rows


def bench_month(services: Services, base: Path, rows: int, repeat: int) -> list[dict]:
    from luigi_tasks.catalog import SERVICES
    from luigi_tasks.synthetic import write_trip_csv

    month = dt.date(2021, 1, 1)
    print(f"generating a {rows:,}-row yellow month ...", flush=True)
    csv = write_trip_csv(base / "month.csv", SERVICES["yellow"], month, rows, seed=1)
    services.serve_month("yellow", month, gzip.compress(csv.read_bytes(), compresslevel=6, mtime=0))
    services.serve_zones()
    results = []
    for kind in ("local", "gcs"):
        name = services.bucket(f"month_{kind}")
        root = str(base / f"m{kind}" / "lake") if kind == "local" else f"gs://{name}/lake"
        (base / f"m{kind}").mkdir(exist_ok=True)
        env = services.config(base / f"m{kind}" / "luigi.cfg", root, name)
        child("DownloadTripData", {"service": "yellow", "month": "2021-01"}, env)
        child("ZonesToParquet", {}, env)  # ToParquet checks the month's location ids against it
        timings: dict[str, list[float]] = {"ToParquet": [], "LoadToPostgres": []}
        for _ in range(repeat):
            for task in timings:  # --reload: the step runs again, its inputs already in the lake
                run = child(task, {"service": "yellow", "month": "2021-01", "reload": "true"}, env)
                assert run["ran"], f"{task} did not run"
                timings[task].append(run["seconds"])
        results.append({"lake": kind, **{task: statistics.median(t) for task, t in timings.items()}})
    return results


def report(noop: list[dict], month: list[dict], args: argparse.Namespace) -> str:
    local = next(r for r in month if r["lake"] == "local")
    remote = next(r for r in month if r["lake"] == "gcs")
    lines = [
        f"### One month ({args.rows:,} rows of yellow), each step run with `--reload`, its input already in the "
        "lake (LoadToPostgres thus replaces the month: DELETE of the previous rows, then COPY)",
        "",
        "| step | local lake, wall s (median) | GCS lake (fake-gcs-server), wall s (median) | GCS / local |",
        "|---|---|---|---|",
    ]
    for task in ("ToParquet", "LoadToPostgres"):
        lines.append(f"| {task} | {local[task]:.2f} | {remote[task]:.2f} | {remote[task] / local[task]:.2f}x |")
    lines += [
        "",
        f"### No-op rerun of a completed backfill into {SINKS.replace(',', ', ')}",
        "",
        "| lake | months | lake size MB | wall s (median) | wall s (min-max) | bytes read from the lake "
        "| data files opened |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in noop:
        lines.append(
            f"| {r['lake']} | {r['months']} | {r['lake_mb']:,.1f} | {r['median']:.2f} | {r['min']:.2f}-{r['max']:.2f}"
            f" | {r['bytes_read']:,} | {r['data_files']} |"
        )
    worst = max(r["median"] for r in noop)
    lines += [
        "",
        f"- No-op rerun: {worst:.2f} s at most (goal <= {GOAL_NOOP_SECONDS:.0f} s: "
        f"{'met' if worst <= GOAL_NOOP_SECONDS else 'NOT met'}); it opens no data file and reads only the "
        "manifests (about 1 KB a month), so what it reads does not grow with the size of the months.",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=YELLOW_2021_01_ROWS)
    parser.add_argument("--months", type=int, default=36)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--write-docs", action="store_true")
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="lake-bench-"))
    services = Services(base)
    try:
        month = bench_month(services, base, args.rows, args.repeat)
        noop = bench_noop(services, base, args.months, args.repeat)
    finally:
        services.stop()
        subprocess.run(["rm", "-rf", str(base)], check=False)
    text = report(noop, month, args)
    print(text)
    if args.write_docs:
        stamp, host = run_stamp(), machine(maxrss_mb())
        DOCS_PATH.write_text(
            "# Benchmark: the lake on object storage\n\n"
            f"`python bench/lake_bench.py --rows {args.rows} --months {args.months} --repeat {args.repeat} "
            f"--write-docs`, {stamp.get('date', dt.date.today())}, commit {stamp.get('commit', '?')}; "
            f"{host.get('cpu', '')} {os.cpu_count()} cores. Each figure is one `luigi.build` in a fresh process "
            "with the local scheduler; every service runs on 127.0.0.1 (the emulators' latency is not a "
            "cloud's: on real GCS each request costs more, which the manifests' parallel reads absorb).\n\n"
            + text
            + "\n"
        )
        print(f"wrote {DOCS_PATH.relative_to(REPO)}")


if __name__ == "__main__":
    main()
