"""What every task shares: the (service, month) key, user-facing failures, progress reporting."""

from __future__ import annotations

import datetime as dt
import logging
import time

import luigi

from luigi_tasks.catalog import SERVICES, Dataset, check_month, parse_month, service
from luigi_tasks.errors import PipelineError

log = logging.getLogger("luigi-interface")


class MonthParameter(luigi.MonthParameter):
    """YYYY-MM, with an error that says what was expected."""

    def parse(self, s: str) -> dt.date:
        return parse_month(s)


class PipelineTask(luigi.Task):
    """Base of every task: a failure we explain is reported as its message, not a traceback."""

    def on_failure(self, exception: BaseException) -> str:
        if isinstance(exception, PipelineError):
            log.error("%s failed: %s", self.task_id, exception)
            return str(exception)
        return super().on_failure(exception)

    def progress_reporter(self, unit: str = "MiB", scale: float = 2**20) -> ProgressReporter:
        return ProgressReporter(self, unit=unit, scale=scale)


class MonthTask(PipelineTask):
    """A task keyed by one month of one TLC service."""

    service = luigi.ChoiceParameter(choices=list(SERVICES), description="TLC service: " + ", ".join(SERVICES))
    month = MonthParameter(description="Month of the trip file, YYYY-MM")

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        check_month(self.dataset, self.month)

    @property
    def dataset(self) -> Dataset:
        return service(self.service)

    @property
    def label(self) -> str:
        return f"{self.service} {self.month:%Y-%m}"


class ProgressReporter:
    """Forwards progress to the scheduler (visualiser) at most once a second or once a percent."""

    def __init__(self, task: luigi.Task, *, unit: str, scale: float) -> None:
        self.task = task
        self.unit = unit
        self.scale = scale
        self._last_time = 0.0
        self._last_percent = -1

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
        if percent is not None and percent != self._last_percent:
            self._last_percent = percent
            self.task.set_progress_percentage(percent)
