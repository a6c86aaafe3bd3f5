"""The end-of-run table: for each month, what ran, what failed and why, the rows in each sink, quality warnings.

Luigi's own summary groups tasks by family and names one month for several failures. This one is built
from the tasks' events: scheduling events fire in the luigi process, run events in whichever process ran
the task (a forked child when --workers > 1). Every event is appended as one JSON line to a spool file
that the luigi process creates (`arm`) and reads when it exits, so all of them reach the table.
"""

from __future__ import annotations

import atexit
import datetime as dt
import json
import logging
import os
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import luigi

log = logging.getLogger("luigi-interface")

_spool: Path | None = None  # set in the luigi process only; forked workers inherit it


def arm() -> None:
    """Collect this process's run (and its workers') and print the table when the process exits."""
    global _spool
    fd, name = tempfile.mkstemp(prefix="luigi_tasks-run-", suffix=".jsonl")
    os.close(fd)
    _spool = Path(name)
    atexit.register(_print_at_exit, _spool)


def note(task: luigi.Task, kind: str, error: str | None = None) -> None:
    """Record one event of a task: scheduled, present (done before), done or failed."""
    month = getattr(task, "month", None)
    event = {
        "kind": kind,
        "task_id": task.task_id,
        "family": task.task_family,
        "service": getattr(task, "service", None),
        "month": f"{month:%Y-%m}" if isinstance(month, dt.date) else None,
        "rows": getattr(task, "rows", None),
        "sinks": list(getattr(task, "sinks", ())),
        "error": error,
        "quality": list(getattr(task, "quality_warnings", ())),
        "notes": list(getattr(task, "notes", ())),
        "new_columns": dict(getattr(task, "new_columns", {})),
    }
    _write(event)


NOT_PUBLISHED_YET = "not published yet"
CHANGED_AT_SOURCE = "changed at the source"


def note_month(service: str, month: dt.date, kind: str, text: str | None = None) -> None:
    """Record what a month is in this run without a task of its own: NOT_PUBLISHED_YET, or CHANGED_AT_SOURCE (`text`
    says how) and therefore done again."""
    _write({"kind": kind, "task_id": f"{service} {month:%Y-%m}", "family": "-", "service": service,
            "month": f"{month:%Y-%m}", "rows": None, "sinks": [], "error": text, "quality": []})  # fmt: skip


def _write(event: dict) -> None:
    if _spool is None:
        return
    # One short write per line in append mode: lines from several processes do not interleave.
    with _spool.open("a", encoding="utf-8") as spool:
        spool.write(json.dumps(event) + "\n")


@luigi.Task.event_handler(luigi.Event.DEPENDENCY_DISCOVERED)
def _on_discovered(task: luigi.Task, dependency: luigi.Task) -> None:
    note(dependency, "scheduled")


@luigi.Task.event_handler(luigi.Event.DEPENDENCY_PRESENT)
def _on_present(task: luigi.Task) -> None:
    note(task, "present")


@luigi.Task.event_handler(luigi.Event.PROCESS_FAILURE)
@luigi.Task.event_handler(luigi.Event.TIMEOUT)
def _on_died(task: luigi.Task, message: str) -> None:
    note(task, "failed", message)  # the worker process died or was killed: no FAILURE event


@dataclass
class MonthRun:
    """What this run did for one (service, month); month None holds the tasks without a month."""

    service: str | None
    month: str | None
    scheduled: set[str] = field(default_factory=set)
    present: set[str] = field(default_factory=set)
    done: dict[str, str] = field(default_factory=dict)  # task id -> family, in the order they finished
    failed: dict[str, str] = field(default_factory=dict)  # task id -> "Family: cause"
    rows: dict[str, int] = field(default_factory=dict)  # sink -> rows written in this run
    done_before: set[str] = field(default_factory=set)  # sinks that already had the month
    quality: list[str] = field(default_factory=list)  # quality warnings of the month converted in this run
    notes: list[str] = field(default_factory=list)  # values kept as NULL by its conversion (Manifest.notes)
    new_columns: dict[str, str] = field(default_factory=dict)  # columns it brought that the catalogue lacks
    not_published: bool = False  # the source has not published the month yet: nothing to do, not a failure
    changes: dict[str, None] = field(default_factory=dict)  # how the source's file changed since it was fetched

    def add(self, event: dict) -> None:
        task_id, kind = event["task_id"], event["kind"]
        if kind == NOT_PUBLISHED_YET:
            self.not_published = True
        elif kind == CHANGED_AT_SOURCE:
            self.changes[event["error"]] = None
        elif kind == "scheduled":
            self.scheduled.add(task_id)
        elif kind == "present":
            self.present.add(task_id)
            sink = _sink_of(event)
            self.done_before.update(event["sinks"] or ([sink] if sink else []))
        elif kind == "done":
            self.done[task_id] = event["family"]
            self.failed.pop(task_id, None)  # retried by a kept-alive worker, then done
            sink = _sink_of(event)
            if sink and event["rows"] is not None:
                self.rows[sink] = event["rows"]
            self.quality += event.get("quality", [])
            self.notes += event.get("notes", [])
            self.new_columns.update(event.get("new_columns", {}))
        else:
            self.failed[task_id] = f"{event['family']}: {event['error']}"

    @property
    def result(self) -> str:
        if self.failed:
            return "FAILED"
        pending = self.scheduled - self.present - set(self.done)
        if self.not_published and not self.done and not pending:
            return NOT_PUBLISHED_YET
        if not pending:
            return "done" if self.done else "done before"
        return "partly run" if self.done else "not run"

    def rows_text(self) -> str:
        if self.result == NOT_PUBLISHED_YET:
            return "-"
        rows = dict(self.rows)
        before = tuple(s for s in self.done_before if s not in rows)
        if before and self.month:
            rows.update(_rows_done_before(self.service, self.month, before))
        return ", ".join(f"{sink} {n:,}" for sink, n in sorted(rows.items())) or "-"


def month_runs(events: list[dict]) -> list[MonthRun]:
    """The events grouped by (service, month), months in order, the tasks without a month last."""
    runs: dict[tuple[str | None, str | None], MonthRun] = {}
    for event in events:
        key = (event["service"], event["month"]) if event["month"] else (None, None)
        runs.setdefault(key, MonthRun(*key)).add(event)
    return sorted(runs.values(), key=lambda r: (r.month is None, r.service or "", r.month or ""))


def table(runs: list[MonthRun]) -> str:
    """The summary as text: one line per month, then one line per failure under it."""
    shown = [r for r in runs if r.month or r.done or r.failed]  # a Backfill found done is not news
    if not shown:
        return "luigi_tasks: no month was scheduled in this run"
    header = ("service", "month", "result", "ran", "rows in sinks")
    cells = [(r.service or "-", r.month or "-", r.result, ", ".join(dict.fromkeys(r.done.values())) or "-",
              r.rows_text()) for r in shown]  # fmt: skip
    widths = [max(len(row[i]) for row in [header, *cells]) for i in range(len(header) - 1)]

    def line(values: tuple[str, ...]) -> str:
        padded = "  ".join(v.ljust(w) for v, w in zip(values, widths, strict=False))  # all but the last
        return padded + "  " + values[-1]

    text = ["===== luigi_tasks: months in this run =====", line(header)]
    for run, values in zip(shown, cells, strict=True):
        text.append(line(values))
        text += [f"    failed: {cause}" for cause in run.failed.values()]
        text += [f"    {CHANGED_AT_SOURCE}: {change}" for change in run.changes]
        text += [f"    quality: {warning}" for warning in run.quality]
        text += [f"    note: {note}" for note in run.notes]
    text += _new_columns(shown)
    results = Counter(r.result for r in shown if r.month)
    if results:
        months = sum(results.values())
        text.append(f"{months} month{'s' * (months != 1)}: " + ", ".join(f"{n} {r}" for r, n in results.items()))
    return "\n".join(text)


def _new_columns(runs: list[MonthRun]) -> list[str]:
    """Each new column once, with the first month of this run that brought it."""
    first: dict[tuple[str, str], tuple[str, str]] = {}
    for run in runs:
        for name, type_ in run.new_columns.items():
            first.setdefault((run.service or "-", name), (run.month or "-", type_))
    kept = "kept in the lake after the catalogue's columns, added to each warehouse table as a nullable column"
    return [f"new column {service}.{name} ({type_}) from {month}: {kept}" for (service, name), (month, type_) in
            first.items()]  # fmt: skip


def read_spool(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


def _print_at_exit(path: Path) -> None:
    try:
        log.info("%s", table(month_runs(read_spool(path))))
    except Exception as exc:  # a summary must never turn a run's exit code into a traceback
        log.warning("luigi_tasks: no summary of months: %s: %s", type(exc).__name__, exc)
    finally:
        path.unlink(missing_ok=True)


def _sink_of(event: dict) -> str | None:
    """The sink a task writes to: the one whose month (or zone lookup) task has this family."""
    from luigi_tasks.tasks.sinks import SINKS, sink_task  # the tasks import this module: look them up when asked

    month = _month(event["month"]) if event["month"] else None
    for name in SINKS:
        if sink_task(name, event["service"], month).task_family == event["family"]:
            return name
    return None


def _rows_done_before(service: str | None, month: str, sinks: tuple[str, ...]) -> dict[str, int]:
    from luigi_tasks.tasks.sinks import rows_by_sink

    return rows_by_sink([(service, _month(month))], sinks)


def _month(text: str) -> dt.date:
    return dt.datetime.strptime(text, "%Y-%m").date()
