"""Show the last task runs from the run history: `python -m luigi_tasks.runs [--limit N] [--path FILE]`."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from luigi_tasks import config
from luigi_tasks.history import runs


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Show the last task runs recorded by luigi_tasks.")
    parser.add_argument("--limit", type=int, default=30)
    parser.add_argument("--path", default=None, help="history file (default: [history] path from luigi.cfg)")
    args = parser.parse_args(argv)
    path = Path(args.path) if args.path else config.history().file
    try:
        print(f"{'finished':19}  {'status':7}  {'seconds':>8}  {'rows':>11}  task")
        for run in reversed(runs(path, args.limit)):
            seconds = f"{run['seconds']:.1f}" if run["seconds"] is not None else ""
            rows = f"{run['rows']:,}" if run["rows"] is not None else ""
            line = f"{run['finished']:19}  {run['status']:7}  {seconds:>8}  {rows:>11}  {task_name(run)}"
            print(line + (f"\n{'':42}{run['error']}" if run["error"] else ""))
        sys.stdout.flush()
    except BrokenPipeError:  # `| head` closed the pipe: stop quietly, as other commands do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def task_name(run: dict) -> str:
    """The task as a person names it, e.g. ToParquet(service=yellow, month=2021-01), not its hashed id."""
    params = json.loads(run["params"] or "{}")
    return f"{run['task_family']}({', '.join(f'{k}={v}' for k, v in params.items())})"


if __name__ == "__main__":
    main()
