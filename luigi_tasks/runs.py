"""Show the last task runs from the run history: `python -m luigi_tasks.runs [--limit N] [--path FILE]`."""

from __future__ import annotations

import argparse
from pathlib import Path

from luigi_tasks import config
from luigi_tasks.history import runs


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Show the last task runs recorded by luigi_tasks.")
    parser.add_argument("--limit", type=int, default=30)
    parser.add_argument("--path", default=None, help="history file (default: [history] path from luigi.cfg)")
    args = parser.parse_args(argv)
    path = Path(args.path) if args.path else config.history().file
    print(f"{'finished':19}  {'status':7}  {'seconds':>8}  {'rows':>11}  task")
    for run in reversed(runs(path, args.limit)):
        seconds = f"{run['seconds']:.1f}" if run["seconds"] is not None else ""
        rows = f"{run['rows']:,}" if run["rows"] is not None else ""
        line = f"{run['finished']:19}  {run['status']:7}  {seconds:>8}  {rows:>11}  {run['task_id']}"
        print(line + (f"\n{'':42}{run['error']}" if run["error"] else ""))


if __name__ == "__main__":
    main()
