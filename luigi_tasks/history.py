"""A small history of task runs in SQLite: what ran, when, for how long, how many rows, and how it ended.

Written by luigi event handlers in the worker, so it works with the local scheduler and with luigid.
Read it with `python -m luigi_tasks.runs` (the last runs) or any SQLite client.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import socket
import sqlite3
from collections.abc import Iterator
from pathlib import Path

from luigi_tasks.errors import HistoryError

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY,
    task_id TEXT NOT NULL,
    task_family TEXT NOT NULL,
    params TEXT NOT NULL,
    status TEXT NOT NULL,
    started TEXT,
    finished TEXT NOT NULL,
    seconds REAL,
    rows INTEGER,
    error TEXT,
    host TEXT,
    pid INTEGER
)
"""


def _connect(path: Path) -> sqlite3.Connection:
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path, timeout=30)
    db.execute("PRAGMA journal_mode=WAL")  # several worker processes may write at once
    db.execute(_SCHEMA)
    return db


_WRITERS: dict[tuple[Path, int], sqlite3.Connection] = {}


def _writer(path: Path) -> sqlite3.Connection:
    """This process's connection for recording in `path`, kept open: opening, committing with a sync and closing
    (a checkpoint) for every task cost about 20 ms a task, most of a small task's cost beyond its work. In WAL mode,
    synchronous=NORMAL syncs at checkpoints, not at every commit: a power cut may lose the last runs' rows, never
    the file. A forked worker process opens its own; a file removed meanwhile is made again."""
    key = (path, os.getpid())
    db = _WRITERS.get(key)
    if db is None or not path.exists():
        db = _WRITERS[key] = _connect(path)
        db.execute("PRAGMA synchronous=NORMAL")
    return db


@contextlib.contextmanager
def _write_errors_named(path: Path) -> Iterator[None]:
    """sqlite's and the OS's errors as one HistoryError naming the file (sqlite's own do not)."""
    try:
        yield
    except (sqlite3.Error, OSError) as exc:
        raise HistoryError(f"cannot write the run history {path}: {exc}") from None


def record(
    path: Path,
    *,
    task_id: str,
    task_family: str,
    params: dict[str, str],
    status: str,
    started: dt.datetime | None,
    rows: int | None = None,
    error: str | None = None,
) -> None:
    finished = dt.datetime.now()
    seconds = (finished - started).total_seconds() if started else None
    with _write_errors_named(path), _writer(path) as db:
        db.execute(
            "INSERT INTO runs (task_id, task_family, params, status, started, finished, seconds, rows, error,"
            " host, pid) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                task_id,
                task_family,
                json.dumps(params, sort_keys=True),
                status,
                started.isoformat(sep=" ", timespec="seconds") if started else None,
                finished.isoformat(sep=" ", timespec="seconds"),
                seconds,
                rows,
                error,
                socket.gethostname(),
                os.getpid(),
            ),
        )


def runs(path: Path, limit: int = 50, task_id: str | None = None) -> list[dict]:
    if not path.exists():
        return []
    with _connect(path) as db:
        db.row_factory = sqlite3.Row
        where, args = ("WHERE task_id = ?", [task_id]) if task_id else ("", [])
        rows = db.execute(f"SELECT * FROM runs {where} ORDER BY id DESC LIMIT ?", [*args, limit]).fetchall()
    db.close()
    return [dict(r) for r in rows]


def latest_rows(path: Path, task_ids: list[str]) -> dict[str, int]:
    """Rows written by the last successful run of each task (tasks that never wrote rows are absent)."""
    if not path.exists() or not task_ids:
        return {}
    with _connect(path) as db:
        marks = ",".join("?" * len(task_ids))
        found = db.execute(
            f"SELECT task_id, rows FROM runs WHERE status = 'DONE' AND rows IS NOT NULL AND task_id IN ({marks})"
            " ORDER BY id",
            task_ids,
        ).fetchall()
    db.close()
    return dict(found)
