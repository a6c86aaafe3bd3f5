"""A refresh that finds nothing changed, over the whole history: Backfill --refresh against the local source server.

Fills a lake with tiny months of every service, from its first month to two months before the current one (about
620 months, as many as the TLC has published), served by the tests' source server (tests/source_server.py: ETag,
Last-Modified, HEAD, CloudFront's 403 for a file that is not there), each manifest holding the validators its
download would have recorded. Then times, each in a fresh process with the local scheduler,

  refresh      luigi.build([Backfill(services=all, start=2009-01, stop=latest, sinks=lake, refresh=True)]): `latest`
               asks the source, then one HEAD per month the lake holds (PROBES_AT_ONCE in flight), nothing downloaded
  no refresh   the same Backfill without --refresh: `latest` and the lake's listings only

and the refresh again with the server pausing before every answer (--latency, a distant server such as the TLC's
CloudFront). HEAD requests and files sent are counted by the server during each run.

    python bench/refresh_bench.py [--repeat 3] [--latency 0.05] [--write-docs]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
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

DOCS_PATH = REPO / "docs" / "refresh-benchmark.md"
ROWS_PER_MONTH = 10
START = dt.date(2009, 1, 1)  # yellow's first month: every service's whole history
GOAL_SECONDS = 10.0

# Runs in the child: build the Backfill (`latest` asks the source) and run it; print JSON.
_CHILD = r"""
import datetime as dt, json, sys, time
began = time.perf_counter()
import luigi
from luigi_tasks import Backfill
backfill = Backfill(services="all", start=dt.date(2009, 1, 1), stop="latest", sinks="lake", refresh=sys.argv[1] == "1")
result = luigi.build([backfill], local_scheduler=True, detailed_summary=True, log_level="WARNING")
assert "Did not run any tasks" in result.summary_text, result.summary_text
print(json.dumps({"seconds": time.perf_counter() - began, "stop": f"{backfill.stop:%Y-%m}"}))
"""


def fill(server, lake: Path, work: Path, stop: dt.date) -> int:
    """Serve every month of every service up to `stop` and put it in the lake with its validators; returns months."""
    from luigi_tasks.convert import to_canonical_parquet
    from luigi_tasks.download import SourceVersion
    from luigi_tasks.files import fingerprints_of
    from luigi_tasks.lake import Lake, LakeEntry, canonical_key

    store = Lake(str(lake))

    def put(raw: Path, path: str, dataset, month: dt.date | None) -> None:
        route = server.routes[path]
        key = canonical_key(dataset, month)
        version = SourceVersion(route.etag, route.last_modified, len(route.body))
        manifest = to_canonical_parquet(raw, store.local_path(key), dataset=dataset, month=month,
                                        source_url=server.base_url + path, source_version=version)  # fmt: skip
        store.write_entry(key, LakeEntry(manifest, fingerprints_of(store.local_path(key))))

    return serve_history(server, work, stop, ROWS_PER_MONTH, then=put)


def measure(server, env: dict[str, str], refresh: bool) -> dict:
    heads, sent = sum(server.heads.values()), sum(server.sent.values())
    began = time.perf_counter()
    child = subprocess.run([sys.executable, "-c", _CHILD, "1" if refresh else "0"], env=env, cwd=REPO,
                           capture_output=True, text=True)  # fmt: skip
    if child.returncode != 0:
        raise SystemExit(child.stderr[-3000:])
    result = json.loads(child.stdout.strip().splitlines()[-1])
    result["process_seconds"] = time.perf_counter() - began
    result["heads"] = sum(server.heads.values()) - heads
    result["sent"] = sum(server.sent.values()) - sent
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--latency", type=float, default=0.05, help="seconds the distant server waits per answer")
    parser.add_argument("--write-docs", action="store_true")
    args = parser.parse_args()

    stamp = run_stamp()
    load_before = os.getloadavg()[0]
    stop = months_back(2)
    server = history_server()
    base = Path(tempfile.mkdtemp(prefix="refresh-bench-"))
    try:
        lake, work = base / "lake", base / "work"
        work.mkdir()
        print(f"filling {lake} with every month of every service up to {stop:%Y-%m} ...", file=sys.stderr, flush=True)
        months = fill(server, lake, work, stop)
        config = base / "luigi.cfg"
        config.write_text(
            source_settings(server) + f"[lake]\nroot = {lake}\n\n[history]\npath = {base}/history.sqlite\n"
        )
        env = {**os.environ, "LUIGI_CONFIG_PATH": str(config), "PYTHONPATH": str(REPO)}
        runs: dict[str, list[dict]] = {"refresh": [], "no refresh": [], "refresh, distant server": []}
        for _ in range(args.repeat):
            for mode in runs:
                server.delay = args.latency if mode.endswith("distant server") else 0.0
                runs[mode].append(measure(server, env, refresh=mode.startswith("refresh")))
                print(f"{mode}: {json.dumps(runs[mode][-1])}", file=sys.stderr, flush=True)
        text = report(runs, months, stop, args)
    finally:
        server.stop()
        shutil.rmtree(base, ignore_errors=True)
    print(text)
    if args.write_docs:
        command = f"python bench/refresh_bench.py --repeat {args.repeat} --latency {args.latency:g} --write-docs"
        title = "Benchmark: a refresh that finds nothing changed, over the whole history"
        write_docs_page(DOCS_PATH, title, text, command, stamp, load_before)


def report(runs: dict[str, list[dict]], months: int, stop: dt.date, args: argparse.Namespace) -> str:
    lines = [
        f"Every service from its first month to {stop:%Y-%m}: {months} months in a local lake, each with the ETag, "
        f"Last-Modified and size of its file at the source (tests/source_server.py on 127.0.0.1, {ROWS_PER_MONTH} "
        "rows a month: nothing reads the data). Each run is a fresh process: `luigi.build([Backfill(services=all, "
        f"start={START:%Y-%m}, stop=latest, sinks=lake, ...)], local_scheduler=True)`, which finds nothing to do.",
        "",
        "| run | luigi_tasks s (median) | min-max | whole process s (median) | HEAD requests | files downloaded |",
        "|---|---|---|---|---|---|",
    ]
    for mode, results in runs.items():
        name = {"refresh": "`--refresh`", "no refresh": "without `--refresh`",
                "refresh, distant server": f"`--refresh`, {args.latency * 1000:.0f} ms per answer"}[mode]  # fmt: skip
        lines.append(
            f"| {name} | {spread([r['seconds'] for r in results])} "
            f"| {statistics.median(r['process_seconds'] for r in results):.2f} "
            f"| {max(r['heads'] for r in results)} | {max(r['sent'] for r in results)} |"
        )
    ours = statistics.median(r["seconds"] for r in runs["refresh"])
    far = statistics.median(r["seconds"] for r in runs["refresh, distant server"])
    lines += [
        "",
        f"- A no-op refresh of {months} months: {ours:.2f} s (goal <= {GOAL_SECONDS:.0f} s: "
        f"{verdict(ours <= GOAL_SECONDS)}), nothing downloaded; {far:.2f} s when every answer takes "
        f"{args.latency * 1000:.0f} ms.",
        "- HEAD requests: one per month in the lake, plus `latest`'s look back (the current month and "
        "`[tlc] publication_lag_months` before it, per service); a 403 is read with a GET of its error body, "
        "which sends no file.",
        "- luigi_tasks s: from the start of the child's imports of luigi to the end of `luigi.build` (`latest` "
        "included); whole process: the interpreter's start too.",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
