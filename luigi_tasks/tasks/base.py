"""What every task shares: the (service, month) key, user-facing failures, progress reporting."""

from __future__ import annotations

import datetime as dt
import functools
import logging
import os
import time
from collections.abc import Callable

import luigi

from luigi_tasks import config, history, notify, source, summary
from luigi_tasks.catalog import SERVICES, ZONES, Dataset, check_month, parse_month, service
from luigi_tasks.errors import DataError, PipelineError
from luigi_tasks.parameters import ChoiceParameter, NamedParameterErrors, OptionNamed
from luigi_tasks.progress import TerminalProgress

log = logging.getLogger("luigi-interface")


class _Latest:
    """`latest` as given, until the services it is the newest month of are known (see month_or_latest)."""

    def __repr__(self) -> str:
        return "latest"


LATEST = _Latest()


class MonthParameter(OptionNamed, luigi.MonthParameter):
    """YYYY-MM, or `latest` (the newest month the source has of the task's services, found by asking it), with an
    error that says what was expected."""

    expected = "YYYY-MM (e.g. 2021-01) or latest"

    def parse(self, s: str) -> dt.date | _Latest:
        if s.strip() == "latest":
            return LATEST
        try:
            return parse_month(s)
        except DataError:
            raise self.bad(s) from None

    def normalize(self, x: object) -> dt.date | _Latest:
        return LATEST if x is LATEST or x == "latest" else super().normalize(x)

    def serialize(self, x: object) -> str:
        return "latest" if x is LATEST else super().serialize(x)


def month_or_latest(value: object, services: tuple[str, ...]) -> object:
    """A parameter's value as it is, or for `latest` the newest month the source has of `services` (asked once per
    run, source.latest)."""
    return source.latest(services) if value is LATEST else value


class CommaListParameter(OptionNamed, luigi.Parameter):
    """A comma-separated list on the command line, a tuple in code; `check` validates and may expand it.

    A subclass says in `expected` what a valid list is: the error names the option, the value and that."""

    expected = "names separated by commas"

    def check(self, names: tuple[str, ...]) -> tuple[str, ...]:
        return names

    def parse(self, x: str | tuple) -> tuple[str, ...]:
        names = tuple(s.strip() for s in x.split(",")) if isinstance(x, str) else tuple(x)
        try:
            return tuple(dict.fromkeys(self.check(names)))
        except (ValueError, DataError):
            raise self.bad(x) from None

    def normalize(self, x: str | tuple) -> tuple[str, ...]:
        return self.parse(x)

    def serialize(self, x: tuple[str, ...]) -> str:
        return ",".join(x)


_FOUND_NOT_DONE: dict[str, int] = {}  # task id -> the process that found it not done


def found_not_done(tasks: list[luigi.Task]) -> None:
    """A bulk check (Backfill's plan) just found these tasks not done: the next complete() of each in this process
    says so without asking the sink again (luigi asks every task it schedules, one round trip each). Once only: the
    check at run time (unless_done) and any later one ask the sink, so a task another worker finished meanwhile is
    not redone; a forked worker process (--workers 2) always asks."""
    _FOUND_NOT_DONE.update(dict.fromkeys((task.task_id for task in tasks), os.getpid()))


class PipelineTask(NamedParameterErrors, luigi.Task):
    """Base of every task: a failure we explain is reported as its message, not a traceback.

    Every run is recorded in the run history; a failure is also posted to [notify] webhook_url, and so is
    a failure to tell whether the task is done (a sink unreachable), which luigi itself only logs.
    A task that writes rows sets `self.rows`, which the history keeps. Subclasses override `is_complete`.
    """

    rows: int | None = None
    found_done = False  # set when run() found the work already done (by another worker)

    def complete(self) -> bool:
        if _FOUND_NOT_DONE.pop(self.task_id, None) == os.getpid():
            return False
        try:
            return self.is_complete()
        except Exception as exc:
            # A wrapper's check asks its requirements' checks: the one that failed reports, once.
            if not getattr(exc, "luigi_tasks_reported", False):
                exc.luigi_tasks_reported = True
                _report_failure(self, f"cannot tell whether it is done: {failure_message(exc)}")
            raise

    def is_complete(self) -> bool:
        """Whether the work is done; luigi's answer (every output exists) unless a task knows better."""
        return super().complete()

    def outcome(self) -> str:
        """The run history's status of a run that succeeded."""
        return "SKIPPED" if self.found_done else "DONE"

    def on_failure(self, exception: BaseException) -> str:
        if isinstance(exception, PipelineError):
            return str(exception)  # luigi's "failed" log line carries it (luigi_tasks.cli.OneLineFailures)
        return super().on_failure(exception)

    def progress_reporter(self, unit: str = "MiB", scale: float = 2**20) -> ProgressReporter:
        return ProgressReporter(self, unit=unit, scale=scale)


def unless_done(run: Callable[[PipelineTask], None]) -> Callable[[PipelineTask], None]:
    """Make run() do nothing when the output is already there.

    Several workers schedule the same graph through luigid; one may find a task missing just before
    another finishes it, and luigid then hands it out again. Checking again at run time keeps every
    piece of work done once (and a concurrent replacement from unpublishing what a reader is using).
    """

    @functools.wraps(run)
    def checked(self: PipelineTask) -> None:
        if self.complete():
            self.found_done = True
            log.info("%s: already done (by another worker); nothing to do", self.task_id)
            return
        run(self)

    return checked


class MonthTask(PipelineTask):
    """A task keyed by one month of one TLC service."""

    service = ChoiceParameter(choices=list(SERVICES), description="TLC service: " + ", ".join(SERVICES))
    month = MonthParameter(description="Month of the trip file, YYYY-MM, or latest (the newest the source has)")

    @classmethod
    def get_param_values(cls, params, args, kwargs):
        values = super().get_param_values(params, args, kwargs)
        return [(name, month_or_latest(value, (dict(values)["service"],))) for name, value in values]

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        check_month(self.dataset, self.month)

    @property
    def dataset(self) -> Dataset:
        return service(self.service)

    @property
    def label(self) -> str:
        return f"{self.service} {self.month:%Y-%m}"


class ZonesTask(PipelineTask):
    """A task on the taxi zone lookup: the twin of a month task, with no month."""

    dataset = ZONES
    month = None
    label = "zone lookup"


class ReloadableTask(PipelineTask):
    """A task that `--reload` runs again even when its output is there (once per run)."""

    reload = luigi.BoolParameter(
        default=False,
        significant=False,
        visibility=luigi.parameter.ParameterVisibility.HIDDEN,  # a way to run, not part of what the task is
        description="Do it again even if it is done (replaces it exactly)",
    )
    _reloaded = False

    def is_complete(self) -> bool:
        if self.reload and not self._reloaded:
            return False
        return super().is_complete()


@ReloadableTask.event_handler(luigi.Event.SUCCESS)
def _on_reloaded(task: ReloadableTask) -> None:
    task._reloaded = True


class ProgressReporter:
    """Forwards progress to the scheduler (visualiser) and the terminal, at most once a second or once a percent."""

    def __init__(self, task: PipelineTask, *, unit: str, scale: float) -> None:
        self.task = task
        self.unit = unit
        self.scale = scale
        self._last_time = 0.0
        self._last_percent = -1
        self.terminal = TerminalProgress(
            f"{task.task_family} {task.label}", unit=unit, scale=scale, interval=config.progress().interval
        )
        task.__dict__.setdefault("_terminal_progress", []).append(self.terminal)

    def __call__(self, done: int, total: int | None) -> None:
        now = time.monotonic()
        percent = int(done * 100 / total) if total else None
        if now - self._last_time < 1.0 and (percent is None or percent == self._last_percent):
            return
        self._last_time = now
        shown = f"{done / self.scale:,.0f}"
        if total:
            shown += f" of {total / self.scale:,.0f}"
        self.task.set_status_message(f"{shown} {self.unit}")
        self.terminal.update(done, total)
        if percent is not None and percent != self._last_percent:
            self._last_percent = percent
            self.task.set_progress_percentage(percent)


def failure_message(exception: BaseException) -> str:
    if isinstance(exception, PipelineError):
        return str(exception)
    return f"{type(exception).__name__}: {exception}"


def _record(task: PipelineTask, status: str, error: str | None = None) -> None:
    history.record(
        config.history().file,
        task_id=task.task_id,
        task_family=task.task_family,
        params=task.to_str_params(only_significant=True),
        status=status,
        started=getattr(task, "_started_at", None),
        rows=task.rows,
        error=error,
    )


@PipelineTask.event_handler(luigi.Event.START)
def _on_start(task: PipelineTask) -> None:
    task._started_at = dt.datetime.now()


def _finish_progress(task: PipelineTask) -> None:
    for terminal in task.__dict__.pop("_terminal_progress", []):
        terminal.finish()


@PipelineTask.event_handler(luigi.Event.SUCCESS)
def _on_success(task: PipelineTask) -> None:
    _finish_progress(task)
    outcome = task.outcome()
    _record(task, outcome)
    if outcome != "DRY-RUN":  # a plan printed: nothing ran
        summary.note(task, "done")


@PipelineTask.event_handler(luigi.Event.FAILURE)
def _on_failure(task: PipelineTask, exception: BaseException) -> None:
    _finish_progress(task)
    _report_failure(task, failure_message(exception))


def _report_failure(task: PipelineTask, message: str) -> None:
    try:
        _record(task, "FAILED", message)
    except PipelineError as exc:  # a full or read-only disk, a bad [lake]: the webhook matters all the more
        log.error("could not record %s: %s", task.task_id, exc)
    summary.note(task, "failed", message)
    url = config.notify().webhook_url
    if url:
        params = task.to_str_params(only_significant=True)
        notify.post_failure(url, notify.failure_payload(task.task_id, task.task_family, params, message))
