"""What the source has now, asked without downloading: a month's validators, and the newest month published.

A month's file is asked about with one HEAD (download.probe), many at once with at most PROBES_AT_ONCE in
flight, retried like a download. An answer stands for ANSWERS_KEPT_SECONDS under the `[tlc]` settings it was
asked with, so one run asks about each file once: `latest`, "is this month out yet?" (both from one look back
from the current month, at most `[tlc] publication_lag_months` months) and a refresh share the answers.

A month is *not published yet* when it lies in that window (the current month and the months back to it) and the
source has no month of its service from it to the current month: the newest months of a range wait for the
source instead of failing. A month missing before a month the source has, or older than the window, is missing.
"""

from __future__ import annotations

import datetime as dt
import time

from luigi_tasks import config
from luigi_tasks.catalog import Dataset
from luigi_tasks.download import SourceVersion, probe_many, redact_url
from luigi_tasks.errors import DataError, NotPublished

Answer = SourceVersion | NotPublished
ANSWERS_KEPT_SECONDS = 60.0  # long enough for a run's scheduling; a process that runs again later asks again


def month_urls(name: str, months: list[dt.date]) -> dict[tuple[str, dt.date], str]:
    """Where each month's file of a service is, as [tlc] says (source, csv_url, parquet_url)."""
    settings = config.tlc()
    return {(name, month): settings.url_for(name, f"{month:%Y}", f"{month:%m}") for month in months}


def ask(dataset: Dataset, months: list[dt.date]) -> dict[dt.date, Answer]:
    """What the source says now about each month's file: its validators, or NotPublished."""
    return {month: answer for (_, month), answer in _ask(month_urls(dataset.name, months)).items()}


def window() -> list[dt.date]:
    """The months that may still be on their way to the source: the current one and `[tlc] publication_lag_months`
    before it, newest first."""
    today = dt.date.today()
    index = today.year * 12 + today.month - 1
    return [dt.date((index - back) // 12, (index - back) % 12 + 1, 1)
            for back in range(config.tlc().publication_lag_months + 1)]  # fmt: skip


def newest_published(names: tuple[str, ...]) -> dict[str, dt.date | None]:
    """Each service's newest month at the source within the window (None: none of them)."""
    months = window()
    answers = _ask({key: url for name in names for key, url in month_urls(name, months).items()})
    return {name: next((m for m in months if isinstance(answers[(name, m)], SourceVersion)), None) for name in names}


def latest(names: tuple[str, ...]) -> dt.date:
    """What `latest` means for these services: the newest month the source has of any of them."""
    found = [month for month in newest_published(names).values() if month is not None]
    if found:
        return max(found)
    months = window()
    example = month_urls(names[0], months[:1])[(names[0], months[0])]
    raise DataError(
        f"latest: the source has no month of {', '.join(names)} from {months[-1]:%Y-%m} to {months[0]:%Y-%m} "
        f"(e.g. {redact_url(example)}); [tlc] publication_lag_months "
        f"{config.tlc().publication_lag_months} is how many months back latest looks"
    )


def not_published_yet(dataset: Dataset, months: list[dt.date]) -> list[dt.date]:
    """Those of `months` (missing from the lake) that the source has not published yet: in the window, and after
    the newest month it has of the service. Only a range reaching into the window asks the source."""
    ahead = window()
    recent = [m for m in months if ahead[-1] <= m <= ahead[0]]
    if not recent:
        return []
    newest = newest_published((dataset.name,))[dataset.name]
    return [m for m in recent if newest is None or m > newest]


def _ask(urls: dict[tuple[str, dt.date], str]) -> dict[tuple[str, dt.date], Answer]:
    settings = config.tlc()
    kept: dict[str, tuple[float, Answer]] = settings.__dict__.setdefault("_source_answers", {})
    now = time.monotonic()
    fresh = {url for url, (when, _) in kept.items() if now - when < ANSWERS_KEPT_SECONDS}
    wanted = {key: (url, f"{key[0]} {key[1]:%Y-%m}") for key, url in urls.items() if url not in fresh}
    options = {"retries": settings.retries, "retry_backoff": settings.retry_backoff, "timeout": settings.timeout}
    for key, answer in probe_many(wanted, **options).items():
        kept[urls[key]] = (now, answer)
    return {key: kept[url][1] for key, url in urls.items()}
