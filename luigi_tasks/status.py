"""What is where: every month of the services asked for, in each sink, with its rows and quality warnings.

    python -m luigi_tasks.status --services yellow,green --start 2019-01 --stop 2020-12 --sinks lake,postgres
    bin/status yellow,green 2019-01 2020-12 [--sinks lake,postgres] [--json] [--html status.html] [--check-source]

Asked of the lake's manifests and of each sink's bulk checks only (one listing or query per sink and service,
as a backfill asks), never of a data file nor of any machine's run history. A month is `done` in a sink that
holds it from the lake's current file, `out of date` in one that holds it from an earlier file (the lake's month
was redone since), `missing` where it is not, and `not published yet` everywhere when the lake lacks one of the
newest months and the source has not published it yet (source.py: the only question asked of the source, and
only for a range reaching into the newest months). --check-source also asks the source about every month the lake
holds (one HEAD each): `changed` when its file changed since it was fetched (a refresh does it again), `gone` when
the source no longer has it. Quality warnings are the ones recorded when the month was converted, and the change
of its row count from the previous month, judged by [quality] row_change_warn and _fail.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import functools
import html
import json
import os
import sys
from pathlib import Path

from luigi_tasks import config
from luigi_tasks.catalog import ZONES, Dataset, service
from luigi_tasks.errors import DataError, PipelineError
from luigi_tasks.parameters import named_as
from luigi_tasks.quality import Finding, Limits, row_change
from luigi_tasks.summary import NOT_PUBLISHED_YET
from luigi_tasks.tasks.backfill import ServicesParameter, months_between
from luigi_tasks.tasks.base import MonthParameter, month_or_latest
from luigi_tasks.tasks.ingest import SinksParameter
from luigi_tasks.tasks.lake import not_published_yet, refresh_months
from luigi_tasks.tasks.sinks import SINKS, done_by_sink

DONE, OUT_OF_DATE, MISSING, NOT_YET = "done", "out of date", "missing", NOT_PUBLISHED_YET
STATES = (DONE, OUT_OF_DATE, MISSING, NOT_YET)
SAME, CHANGED, GONE = "same", "changed", "gone"  # the source's file against the lake's, with --check-source


@dataclasses.dataclass(frozen=True)
class MonthStatus:
    """One month of one service: its rows in the lake (None: no complete file), its state in each sink, its
    quality findings, and with --check-source the source's file against the lake's (SAME, CHANGED, GONE; None:
    not asked, the lake not having the month) and how it differs."""

    service: str
    month: str
    rows: int | None
    sinks: dict[str, str]
    quality: tuple[Finding, ...] = ()
    notes: tuple[str, ...] = ()  # values its conversion kept as NULL (Manifest.notes)
    new_columns: dict[str, str] = dataclasses.field(default_factory=dict)  # columns the catalogue does not know
    source: str | None = None
    source_detail: str | None = None


@dataclasses.dataclass(frozen=True)
class Status:
    services: tuple[str, ...]
    start: str
    stop: str
    sinks: tuple[str, ...]
    months: list[MonthStatus]
    zones: dict[str, str]  # sink -> state of the zone lookup
    checked_source: bool = False

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=1)


def states(dataset: Dataset, months: list[dt.date | None], sinks: tuple[str, ...]) -> tuple[dict, dict[str, dict]]:
    """The lake's entries of these months and, per sink, each month's state: two bulk checks per sink."""
    entries, done = done_by_sink(dataset, months, sinks)
    found = {}
    for sink in sinks:
        held = SINKS[sink].held(dataset, months)
        found[sink] = {m: DONE if m in done[sink] else OUT_OF_DATE if m in held else MISSING for m in months}
    return entries, found


def collect(
    services: tuple[str, ...],
    start: dt.date,
    stop: dt.date,
    sinks: tuple[str, ...],
    limits: Limits,
    check_source: bool = False,
) -> Status:
    """The status of every published month from start to stop of each service, in each sink (and at the source)."""
    rows: list[MonthStatus] = []
    for name in services:
        dataset = service(name)
        first = dataset.first_month or start
        months = [m for m in months_between(start, stop) if m >= first]
        if not months:
            continue
        before = _previous_month(months[0])
        # The month before the range is asked too: the first month's row change needs its count.
        asked = ([before] if before >= first else []) + months
        entries, found = states(dataset, asked, sinks)
        for month in not_published_yet(dataset, [m for m in months if m not in entries]):
            for sink in sinks:
                found[sink][month] = NOT_YET
        changed, gone = refresh_months(dataset, months, redo=False) if check_source else ({}, {})
        verdicts = {**dict.fromkeys(changed, CHANGED), **dict.fromkeys(gone, GONE)}
        for month in months:
            entry = entries.get(month)
            source = verdicts.get(month, SAME if entry and check_source else None)
            findings = list(entry.manifest.quality.findings) if entry and entry.manifest.quality else []
            previous = entries.get(_previous_month(month))
            if entry and previous:
                change = row_change(entry.manifest.rows_out, previous.manifest.rows_out, limits)
                findings += [change] if change else []
            rows.append(MonthStatus(name, f"{month:%Y-%m}", entry.manifest.rows_out if entry else None,
                                    {sink: found[sink][month] for sink in sinks}, tuple(findings),
                                    tuple(entry.manifest.notes()) if entry else (),
                                    dict(entry.manifest.columns_added) if entry else {}, source,
                                    changed.get(month) or gone.get(month)))  # fmt: skip
    zones = {sink: by_month[None] for sink, by_month in states(ZONES, [None], sinks)[1].items()}
    return Status(services, f"{start:%Y-%m}", f"{stop:%Y-%m}", sinks, rows, zones, check_source)


def _previous_month(month: dt.date) -> dt.date:
    return dt.date(month.year - (month.month == 1), (month.month - 2) % 12 + 1, 1)


def text(status: Status) -> str:
    """The matrix as a person reads it in a terminal: one line per month, a state per sink, then its warnings."""
    source = ("source",) if status.checked_source else ()
    header = ("service", "month", "rows", *status.sinks, *source)
    cells = [(m.service, m.month, f"{m.rows:,}" if m.rows is not None else "-", *m.sinks.values(),
              *([m.source or "-"] if source else [])) for m in status.months]  # fmt: skip
    widths = [max(len(row[i]) for row in [header, *cells]) for i in range(len(header))]

    def line(values: tuple[str, ...]) -> str:
        padded = [v.rjust(w) if i == 2 else v.ljust(w) for i, (v, w) in enumerate(zip(values, widths, strict=True))]
        return "  ".join(padded).rstrip()  # rows right-aligned, the rest left

    lines = [f"luigi_tasks status {status.start}..{status.stop}", line(header)]
    for month, values in zip(status.months, cells, strict=True):
        lines.append(line(values))
        lines += [f"    source: {month.source_detail}"] if month.source_detail else []
        lines += [f"    quality: {finding.text()}" for finding in month.quality]
        lines += [f"    note: {note}" for note in month.notes]
    lines.append("zone lookup: " + ", ".join(f"{sink} {state}" for sink, state in status.zones.items()))
    lines += [f"{name}: {tally(status, name)}" for name in status.services]
    lines += new_columns(status)
    return "\n".join(lines)


def new_columns(status: Status) -> list[str]:
    """'yellow: new column request_source (string) from 2026-06': each column the catalogue lacks, once."""
    first: dict[tuple[str, str], tuple[str, str]] = {}
    for month in status.months:
        for name, type_ in month.new_columns.items():
            first.setdefault((month.service, name), (month.month, type_))
    return [f"{service}: new column {name} ({type_}) from {month}" for (service, name), (month, type_) in first.items()]


def tally(status: Status, name: str) -> str:
    """'4 months; lake 3 done, 1 missing; ...; 2 with quality warnings' for one service."""
    months = [m for m in status.months if m.service == name]
    counts = [f"{sink} " + ", ".join(f"{n} {state}" for state in STATES
                                     if (n := sum(m.sinks[sink] == state for m in months)))
              for sink in status.sinks]  # fmt: skip
    warned = sum(bool(m.quality) for m in months)
    at_source = [
        f"{n} {state} at the source" for state in (CHANGED, GONE) if (n := sum(m.source == state for m in months))
    ]
    return f"{len(months)} months; " + "; ".join([*counts, *at_source]) + f"; {warned} with quality warnings"


_COLOURS = {DONE: "#2e7d32", OUT_OF_DATE: "#f9a825", MISSING: "#c62828", NOT_YET: "#757575"}
_SOURCE_COLOURS = {SAME: "#2e7d32", CHANGED: "#f9a825", GONE: "#c62828"}
_SHOWN = {OUT_OF_DATE: "old", MISSING: "-", NOT_YET: "..."}  # a cell's text; the state is in its title
_MONTH_NAMES = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_STYLE = """
body { font: 14px system-ui, sans-serif; margin: 24px; color: #222; }
h1 { font-size: 20px; } h2 { font-size: 16px; margin: 24px 0 4px; }
.legend span { display: inline-block; padding: 2px 10px; margin-right: 8px; border-radius: 3px; color: #fff; }
.sinks { display: flex; flex-wrap: wrap; gap: 8px 24px; align-items: flex-start; }
.grid { border-collapse: collapse; font-size: 11px; }
.grid th, .grid td { border: 1px solid #fff; padding: 1px 2px; text-align: center; white-space: nowrap; }
.grid th { background: #eee; font-weight: 600; }
.grid td.cell { color: #fff; width: 30px; height: 15px; font-variant-numeric: tabular-nums; }
.grid td.warned { outline: 2px solid #222; outline-offset: -2px; }
.grid td.none { background: #fafafa; }
ul.findings { margin: 6px 0; padding-left: 20px; font-size: 13px; }
"""


def page(status: Status) -> str:
    """A self-contained HTML page that fits a screen's width however long the range: per service and sink, a grid of
    years (rows) by months (columns) coloured by state, each cell with its row count (exactly in its title) and an
    outline when the month has quality warnings; the findings and notes are listed below. No script, no asset."""
    esc = html.escape
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>luigi_tasks status {esc(status.start)}..{esc(status.stop)}</title>",
        f"<style>{_STYLE}</style></head><body>",
        f"<h1>luigi_tasks status {esc(status.start)}..{esc(status.stop)}</h1>",
        '<p class="legend">'
        + "".join(f'<span style="background:{c}">{esc(s)}</span>' for s, c in _COLOURS.items())
        + "quality warnings: outlined</p>",
    ]
    for name in status.services:
        months = [m for m in status.months if m.service == name]
        if not months:
            continue
        parts.append(f'<h2 id="{esc(name)}">{esc(name)}</h2><p>{esc(tally(status, name))}</p><div class="sinks">')
        for sink in status.sinks:
            parts.append(_year_grid(sink, months, functools.partial(_sink_cell, sink)))
        if status.checked_source:
            parts.append(_year_grid("source", months, _source_cell))
        parts.append("</div>")
        listed = [f"<li>{esc(m.month)}: {esc(f.text())}</li>" for m in months for f in m.quality]
        listed += [f"<li>{esc(m.month)}: note: {esc(note)}</li>" for m in months for note in m.notes]
        listed += [f"<li>{esc(line)}</li>" for line in new_columns(status) if line.startswith(f"{name}: ")]
        if listed:
            parts.append('<ul class="findings">' + "".join(listed) + "</ul>")
    zones = ", ".join(f"{sink} {state}" for sink, state in status.zones.items())
    parts.append(f"<p>zone lookup: {esc(zones)}</p></body></html>")
    return "\n".join(parts)


def _year_grid(heading: str, months: list[MonthStatus], cell) -> str:
    """One grid: a row per year of the months, a column per calendar month; `cell(month)` gives a month's <td>."""
    by_month = {m.month: m for m in months}
    years = range(int(months[0].month[:4]), int(months[-1].month[:4]) + 1)
    rows = [f"<tr><th>{html.escape(heading)}</th>" + "".join(f"<th>{n}</th>" for n in _MONTH_NAMES) + "</tr>"]
    for year in years:
        found = [by_month.get(f"{year}-{number:02d}") for number in range(1, 13)]
        rows.append(
            f"<tr><th>{year}</th>" + "".join(cell(m) if m else '<td class="cell none"></td>' for m in found) + "</tr>"
        )
    return f'<table class="grid">{"".join(rows)}</table>'


def _sink_cell(sink: str, m: MonthStatus) -> str:
    state = m.sinks[sink]
    shown = _short(m.rows) if state == DONE and m.rows is not None else _SHOWN[state]
    tip = f"{m.service} {m.month} {sink}: {state}" + (f", {m.rows:,} rows" if m.rows is not None else "")
    tip += f"; {len(m.quality)} quality warning{'s' * (len(m.quality) != 1)}" if m.quality else ""
    warned = " warned" if m.quality else ""
    return (f'<td class="cell{warned}" style="background:{_COLOURS[state]}" title="{html.escape(tip)}"'
            f' data-state="{html.escape(state)}">{html.escape(shown)}</td>')  # fmt: skip


def _source_cell(m: MonthStatus) -> str:
    tip = f"{m.service} {m.month} source: {m.source_detail or m.source or 'not in the lake'}"
    return (f'<td class="cell" style="background:{_SOURCE_COLOURS.get(m.source, "#ccc")}" title="{html.escape(tip)}">'
            f"{html.escape((m.source or '')[:4])}</td>")  # fmt: skip


def _short(rows: int) -> str:
    """1,234,567 -> 1.2M: the grid's cells stay narrow; the exact count is in the cell's title."""
    for limit, suffix in ((1_000_000, "M"), (1_000, "k")):
        if rows >= limit:
            return f"{rows / limit:.1f}{suffix}"
    return str(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Which months of which services are in which sinks.")
    parser.add_argument("--services", default="all", help="comma-separated services, or all (default)")
    parser.add_argument("--start", required=True, help="first month, YYYY-MM")
    parser.add_argument("--stop", default="latest", help="last month, YYYY-MM or latest (default)")
    parser.add_argument("--sinks", default="lake", help="comma-separated sinks: " + ", ".join(SINKS))
    parser.add_argument("--json", action="store_true", help="print JSON instead of the table")
    parser.add_argument("--html", metavar="FILE", help="also write the status as a self-contained HTML page")
    parser.add_argument(
        "--check-source",
        action="store_true",
        help="ask the source about every month the lake holds (one HEAD each): which changed since they were fetched",
    )
    args = parser.parse_args(argv)
    try:
        services = named_as(ServicesParameter(), "--services").parse(args.services)
        start, stop = (month_or_latest(named_as(MonthParameter(), f"--{o}").parse(getattr(args, o)), services)
                       for o in ("start", "stop"))  # fmt: skip
        if stop < start:
            raise DataError(f"status: --stop {stop:%Y-%m} is before --start {start:%Y-%m}")
        sinks = named_as(SinksParameter(), "--sinks").parse(args.sinks)
        status = collect(services, start, stop, sinks, config.quality().limits(), args.check_source)
    except (PipelineError, ValueError) as exc:
        print(f"status: {exc}" if not str(exc).startswith("status:") else str(exc), file=sys.stderr)
        return 2 if isinstance(exc, (DataError, ValueError)) else 1
    if args.html:
        Path(args.html).write_text(page(status), encoding="utf-8")
    try:
        print(status.to_json() if args.json else text(status), flush=True)
    except BrokenPipeError:  # `| head` closed the pipe: stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
