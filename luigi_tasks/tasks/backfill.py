"""Backfill: every month of a range, for several services, into the sinks asked for, in one command."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import luigi

from luigi_tasks import summary
from luigi_tasks.catalog import SERVICES, next_month, service
from luigi_tasks.errors import DataError
from luigi_tasks.tasks.base import (
    CommaListParameter,
    MonthParameter,
    PipelineTask,
    found_not_done,
    log,
    month_or_latest,
)
from luigi_tasks.tasks.ingest import IngestMonth, SinksParameter
from luigi_tasks.tasks.lake import not_published_yet, refresh_months
from luigi_tasks.tasks.sinks import SINKS, done_by_sink, rows_by_sink, sink_task, zones_done


class ServicesParameter(CommaListParameter):
    """A comma-separated list of services, or `all`."""

    expected = f"all, or one or more of {', '.join(SERVICES)}, separated by commas"

    def check(self, names: tuple[str, ...]) -> tuple[str, ...]:
        if names == ("all",):
            return tuple(SERVICES)
        for name in names:
            service(name)  # a clear error for an unknown one
        return names


def months_between(start: dt.date, stop: dt.date) -> list[dt.date]:
    """Every month from start to stop, both included."""
    months, month = [], start
    while month <= stop:
        months.append(month)
        month = next_month(month)
    return months


@dataclass
class BackfillPlan:
    done: dict[str, list[dt.date]] = field(default_factory=dict)
    missing: dict[str, dict[dt.date, list[str]]] = field(default_factory=dict)  # month -> sinks lacking it
    unpublished: dict[str, list[dt.date]] = field(default_factory=dict)  # before the service's first month
    not_yet: dict[str, list[dt.date]] = field(default_factory=dict)  # at the end, not published by the source yet
    changed: dict[str, dict[dt.date, str]] = field(default_factory=dict)  # --refresh: changed at the source
    gone: dict[str, dict[dt.date, str]] = field(default_factory=dict)  # --refresh: no longer at the source
    zones_missing: list[str] = field(default_factory=list)  # sinks without the zone lookup

    def describe(self) -> str:
        lines = []
        for name in self.done:
            lines.append(f"{name}: {len(self.done[name])} done {_spans(self.done[name])}".rstrip())
            missing = self.missing[name]
            lines.append(f"{name}: {len(missing)} to run {_spans(list(missing))}".rstrip())
            by_sinks: dict[tuple[str, ...], list[dt.date]] = {}
            for month, sinks in missing.items():
                by_sinks.setdefault(tuple(sinks), []).append(month)
            lines += [f"    into {', '.join(sinks)}: {_spans(months)}" for sinks, months in by_sinks.items()]
            lines += [
                f"    {month:%Y-%m} changed at the source: {change}" for month, change in self.changed[name].items()
            ]
            if self.gone[name]:
                lines.append(f"{name}: no longer at the source (each a failure): {_spans(list(self.gone[name]))}")
            if self.not_yet[name]:
                lines.append(f"{name}: not published yet: {_spans(self.not_yet[name])}")
            if self.unpublished[name]:
                lines.append(f"{name}: skipped, not published by the TLC: {_spans(self.unpublished[name])}")
        if self.zones_missing:
            lines.append(f"zone lookup: to load into {', '.join(self.zones_missing)}")
        return "\n".join(lines)


def _spans(months: list[dt.date]) -> str:
    """2019-01..2019-06, 2019-09: consecutive months as one span."""
    spans: list[list[dt.date]] = []
    for month in sorted(months):
        if spans and next_month(spans[-1][-1]) == month:
            spans[-1].append(month)
        else:
            spans.append([month])
    return ", ".join(f"{s[0]:%Y-%m}" if len(s) == 1 else f"{s[0]:%Y-%m}..{s[-1]:%Y-%m}" for s in spans)


class Backfill(PipelineTask, luigi.WrapperTask):
    """Every IngestMonth from --start to --stop (both inclusive) for each of --services, into --sinks.

    What is already done is found with one bulk check per sink and service (a directory listing, one
    query), not one check per month; only the missing months are scheduled. Months at the end of the range
    that the source has not published yet are left for a later run, without a failure. --refresh first asks the
    source about every month the lake holds (HEAD requests, several at once) and does again the months whose file
    changed. --dry-run prints the plan and runs nothing.
    """

    services = ServicesParameter(description="Comma-separated services, or all: " + ", ".join(SERVICES))
    start = MonthParameter(description="First month, YYYY-MM (inclusive)")
    stop = MonthParameter(description="Last month, YYYY-MM (inclusive)")
    sinks = SinksParameter(default=("lake",), description="Where the months go: " + ", ".join(SINKS))
    dry_run = luigi.BoolParameter(
        default=False, significant=False, description="Print what would run and what is done; run nothing"
    )
    refresh = luigi.BoolParameter(
        default=False,
        significant=False,
        visibility=luigi.parameter.ParameterVisibility.HIDDEN,  # a way to run, not part of what the task is
        description="Ask the source about every month the lake holds (one HEAD each) and do again those whose file "
        "changed since it was fetched: download, conversion, every sink",
    )

    @classmethod
    def get_param_values(cls, params, args, kwargs):
        values = super().get_param_values(params, args, kwargs)
        return [(name, month_or_latest(value, dict(values)["services"])) for name, value in values]

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if self.stop < self.start:
            raise DataError(f"--stop '{self.stop:%Y-%m}': expected --start {self.start:%Y-%m} or a later month")
        self._plan: BackfillPlan | None = None
        self._told: BackfillPlan | None = None  # the plan whose missing tasks found_not_done was told of

    def plan(self) -> BackfillPlan:
        """What is done and what is missing, from one bulk check per sink per service (asked anew)."""
        plan = BackfillPlan()
        months = months_between(self.start, self.stop)
        for name in self.services:
            dataset = service(name)
            published = self._published(name)
            plan.unpublished[name] = [m for m in months if m not in published]
            # A month changed at the source is made not done in the lake (unless this is a dry run), so every
            # sink's check finds it missing and the month is scheduled like any other.
            plan.changed[name], plan.gone[name] = (
                refresh_months(dataset, published, redo=not self.dry_run) if self.refresh else ({}, {})
            )
            entries, done = done_by_sink(dataset, published, self.sinks)
            lacking = {m: [sink for sink, months in done.items() if m not in months] for m in published}
            for month in plan.changed[name]:  # a dry run: as they will be
                lacking[month] = list(self.sinks)
            plan.not_yet[name] = not_published_yet(dataset, [m for m in published if m not in entries])
            plan.done[name] = [m for m in published if not lacking[m]]
            plan.missing[name] = {m: s for m, s in lacking.items() if s and m not in plan.not_yet[name]}
        plan.zones_missing = [sink for sink, done in zones_done(self.sinks).items() if not done]
        self._plan = plan
        if not self.dry_run:
            for name in self.services:
                for month, change in plan.changed[name].items():
                    summary.note_month(name, month, summary.CHANGED_AT_SOURCE, change)
                for month in plan.not_yet[name]:
                    summary.note_month(name, month, summary.NOT_PUBLISHED_YET)
        return plan

    def _published(self, name: str) -> list[dt.date]:
        first = service(name).first_month
        return [m for m in months_between(self.start, self.stop) if first is None or m >= first]

    def requires(self) -> list[luigi.Task]:
        if self.dry_run:
            return []
        # Luigi asks complete() just before requires(): use the answer it got.
        plan = self._plan or self.plan()
        tasks: list[luigi.Task] = [sink_task(sink, None, None) for sink in plan.zones_missing]
        not_done = list(tasks)
        for name, missing in plan.missing.items():
            months = [IngestMonth(service=name, month=month, sinks=self.sinks) for month in missing]
            tasks += months
            not_done += months + [sink_task(s, name, month) for month, sinks in missing.items() for s in sinks]
            # Failing there, with the source's answer, unless the source has it back.
            tasks += [
                IngestMonth(service=name, month=month, sinks=self.sinks, refresh=True) for month in plan.gone[name]
            ]
        if plan is not self._told:  # luigi asks requires() again before run(): by then, they are done
            found_not_done(not_done)
            self._told = plan
        return tasks

    def is_complete(self) -> bool:
        if self.dry_run:
            return False  # a dry run always runs: it prints the plan
        plan = self.plan()
        return not plan.zones_missing and not any(plan.missing.values()) and not any(plan.gone.values())

    def outcome(self) -> str:
        return "DRY-RUN" if self.dry_run else super().outcome()  # a plan printed, not the work done

    def run(self) -> None:
        if self.dry_run:
            print(f"Backfill {self.start:%Y-%m}..{self.stop:%Y-%m} into {', '.join(self.sinks)} (dry run):")
            print(self.plan().describe(), flush=True)
        else:
            months = [(name, month) for name in self.services for month in self._published(name)]
            rows = rows_by_sink(months, self.sinks)
            log.info(
                "Backfill %s..%s: %s",
                f"{self.start:%Y-%m}",
                f"{self.stop:%Y-%m}",
                ", ".join(f"{sink} {n:,} rows" for sink, n in rows.items()),
            )
        self._plan = None
