"""Preflight: check what a backfill needs before it starts, and say what to fix.

    python -m luigi_tasks.doctor SERVICES START STOP [--sinks lake,postgres,...] [scheduler options]

reads the same config as a run (luigi.cfg, LUIGI_CONFIG_PATH) and prints one line per check:
`ok   <what>`, `warn <what>: <why>` or `FAIL <what>: <why, and what to do>`. It exits 0 when nothing failed
(warnings included), 1 when something did, 2 for a bad command line. Each check is a plain function
returning Check results; a check that raises is reported as a FAIL line, never as a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import os
import shutil
import socket
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import luigi.configuration
import requests
from luigi.task_register import Register

from luigi_tasks import cli, config, sql
from luigi_tasks.catalog import SERVICES, service
from luigi_tasks.download import payload_kind, redact_url
from luigi_tasks.errors import PipelineError
from luigi_tasks.files import writer_tag
from luigi_tasks.lake import Lake
from luigi_tasks.lazy import lazy_module
from luigi_tasks.parameters import named_as

gcs = lazy_module("luigi_tasks.gcs")
bigquery = lazy_module("luigi_tasks.bigquery")
s3 = lazy_module("luigi_tasks.s3")
azure = lazy_module("luigi_tasks.azure")
postgres = lazy_module("luigi_tasks.postgres")

OK, WARN, FAIL = "ok", "warn", "FAIL"
PATIENCE = 15.0  # seconds a cloud request may take and be retried for: a preflight answers soon


@dataclass(frozen=True)
class Check:
    """One line of the report."""

    status: str  # OK, WARN or FAIL
    what: str
    why: str = ""

    @property
    def line(self) -> str:
        return f"{self.status:<4} {self.what}" + (f": {self.why}" if self.why else "")


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def guarded(what: str, check: Callable[[], list[Check]]) -> list[Check]:
    """The check's lines; an error it raises becomes one FAIL line (our errors are written for the user)."""
    try:
        return check()
    except PipelineError as exc:
        return [Check(FAIL, what, _one_line(exc))]
    except Exception as exc:  # an unforeseen failure is still one line, not a traceback
        return [Check(FAIL, what, f"{type(exc).__name__}: {_one_line(exc)}")]


# --- config -------------------------------------------------------------------------------------------------


def sections() -> list[type[config._Section]]:
    """Every section of luigi_tasks' config, in the order config.py declares them."""
    return config._Section.__subclasses__()


def config_files() -> list[str]:
    """The config files luigi reads, in order (later ones win)."""
    paths = [os.path.realpath(p) for p in luigi.configuration.get_config()._config_paths if os.path.isfile(p)]
    return list(dict.fromkeys(paths))


def _make(section: Callable[[], object]) -> list[Check]:
    section()  # its checks run as it is made
    return []


def check_config() -> list[Check]:
    """Every section's values, checked the way a run checks them: by making the section."""
    results = []
    named = os.environ.get("LUIGI_CONFIG_PATH")
    if named and not os.path.isfile(named):
        results.append(Check(FAIL, "config", f"LUIGI_CONFIG_PATH {named} is not a file: point it at your luigi.cfg"))
    for section in sections():
        results += guarded(f"config [{section.__name__}]", lambda s=section: _make(s))
    if not results:
        files = ", ".join(config_files()) or "no config file, the defaults"
        results.append(Check(OK, "config", f"every section is valid ({files})"))
    return results


# --- the source ---------------------------------------------------------------------------------------------


def _failure_cause(exc: BaseException, timeout: float) -> str:
    """The root cause of a failed request in a few words: a name that does not resolve, a refused connection..."""
    if isinstance(exc, requests.Timeout):
        return f"no answer within {timeout:g} s"
    seen: set[int] = set()
    pending: list[BaseException] = [exc]
    while pending:
        error = pending.pop()
        if id(error) in seen:
            continue
        seen.add(id(error))
        if isinstance(error, socket.gaierror):
            return "the host name does not resolve"
        if isinstance(error, OSError) and isinstance(error, (ConnectionRefusedError, TimeoutError)):
            return cli.connection_failure(error, timeout)
        linked = [error.__cause__, error.__context__, getattr(error, "reason", None), *error.args]
        pending += [e for e in linked if isinstance(e, BaseException)]
    return type(exc).__name__


_PROBE_READ = 1 << 16  # bytes of the body read at most


def probe_url(url: str, timeout: float) -> int:
    """The HTTP status of a GET of the URL's first byte; PipelineError, with the cause, if it cannot be reached."""
    try:
        with requests.get(url, headers={"Range": "bytes=0-0"}, stream=True, timeout=(timeout, timeout)) as reply:
            reply.raw.read(_PROBE_READ)  # a server that ignores Range: read a little, then hang up
            return reply.status_code
    except requests.RequestException as exc:
        raise PipelineError(f"cannot reach {redact_url(url)}: {_failure_cause(exc, timeout)}") from None


def _source_check(what: str, url: str, key: str, timeout: float) -> Check:
    try:
        status = probe_url(url, timeout)
    except PipelineError as exc:
        return Check(FAIL, what, f"{exc} (check {key}, the network and DNS)")
    shown = redact_url(url)
    if status in (200, 206):
        return Check(OK, what, f"{shown} answers")
    if status in (403, 404):  # S3 and CloudFront answer 403 for a key that does not exist
        return Check(WARN, what, f"not published at {shown} (HTTP {status}): that month will fail")
    return Check(FAIL, what, f"{shown} answered HTTP {status} (check {key}; a 5xx is the server's fault: try later)")


def _published(name: str, months: list[dt.date]) -> list[dt.date]:
    """The months of the range the TLC publishes for the service (a backfill skips the others)."""
    first = service(name).first_month
    return [m for m in months if first is None or m >= first]


def check_source(services: Iterable[str], months: list[dt.date]) -> list[Check]:
    """One request per service and URL template (the range's first month from each), and one for the zone lookup."""
    tlc = config.tlc()
    results = []
    for name in services:
        published = _published(name, months)
        if not published:
            why = f"nothing to fetch: the TLC publishes {name} from {service(name).first_month:%Y-%m}"
            results.append(Check(WARN, f"source {name}", why))
            continue
        firsts: dict[str, dt.date] = {}
        for month in published:
            firsts.setdefault(tlc.url_key(name, month), month)
        for key, month in firsts.items():
            url = tlc.url_for(name, f"{month:%Y}", f"{month:%m}")
            results.append(_source_check(f"source {name} {month:%Y-%m}", url, f"[tlc] {key}", tlc.timeout))
    results.append(_source_check("source zone lookup", tlc.zones_url, "[tlc] zones_url", tlc.timeout))
    return results


# --- the lake -----------------------------------------------------------------------------------------------

PROBE = b"luigi_tasks doctor: a probe file, deleted right after it is written\n"


def open_lake() -> Lake:
    """The configured lake, made anew (not the cached one a run uses: the doctor must see the lake as it is now)."""
    settings = config.lake()
    return Lake(settings.root, scratch=settings.scratch)


def check_lake() -> list[Check]:
    """The root is reachable and writable (a probe file written, read back, deleted); so are scratch and the
    folder of this machine's run history."""
    return guarded("lake", _check_lake_root) + guarded("scratch", _check_scratch) + guarded("history", _check_history)


def _check_lake_root() -> list[Check]:
    lake = open_lake()
    what = f"lake {lake.uri()}"
    lake.check()
    key = f".doctor-probe-{writer_tag()}"
    made = _missing_dirs(Path(lake.base)) if lake.is_local else []
    try:
        lake.write_bytes(key, PROBE)
        written = lake.read_bytes(key)
        lake.delete(key)
    except OSError as exc:
        return [Check(FAIL, what, f"cannot write in it: {exc.strerror or exc} (make it writable, or set [lake] root)")]
    except PipelineError as exc:
        return [Check(FAIL, what, f"cannot write in it: {exc}")]
    finally:
        _remove(made)
    if written != PROBE:
        return [Check(FAIL, what, f"a probe file written to {lake.uri(key)} did not read back the same")]
    return [Check(OK, what, "reachable and writable (a probe file was written, read back and deleted)")]


def _remove(folders: list[Path]) -> None:
    """Folders made for the probe, if empty: a lake that did not exist is made by the first run, not here."""
    for folder in folders:
        with contextlib.suppress(OSError):
            folder.rmdir()


def _missing_dirs(path: Path) -> list[Path]:
    """The path and its ancestors that do not exist, deepest first."""
    missing = []
    while not path.exists() and path != path.parent:
        missing.append(path)
        path = path.parent
    return missing


def _check_scratch() -> list[Check]:
    scratch = open_lake().scratch
    return writable(scratch, f"scratch {scratch}", "[lake] scratch")


def _check_history() -> list[Check]:
    file = config.history().file.absolute()
    return writable(file.parent, f"run history {file}", "[history] path")


def writable(folder: Path, what: str, setting: str) -> list[Check]:
    """A local folder can be made and written (a probe file written and deleted; folders made for it removed)."""
    made = _missing_dirs(folder)
    probe = folder / f".doctor-probe-{writer_tag()}"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(PROBE)
        probe.unlink()
    except OSError as exc:
        return [Check(FAIL, what, f"cannot write in it: {exc.strerror or exc} (make it writable, or set {setting})")]
    finally:
        _remove(made)
    return [Check(OK, what, "writable")]


# --- disk space ---------------------------------------------------------------------------------------------

# Rough bytes per row of a month, as published and as the lake's canonical Parquet; from real yellow files
# (2019-01: 7.7M rows, 687 MB of CSV) and the files in docs/benchmarks.md (1.37M rows: 49 MB .csv.gz,
# 41.5 MB canonical Parquet; synthetic values compress somewhat worse than real ones).
BYTES_PER_ROW = {"csv": 90, "csv.gz": 36, "parquet": 31}
# Rows in a busy month of each service (yellow 2019: 7-7.7M; fhvhv: 12-24M): an estimate errs on the high side.
ROWS_PER_MONTH = {"yellow": 7_500_000, "green": 650_000, "fhv": 2_500_000, "fhvhv": 20_000_000}
TIGHT = 0.5  # warn when the estimate needs more than this share of the free space

MonthBytes = Callable[[str, dt.date], "tuple[int, int]"]


def month_bytes(name: str, month: dt.date) -> tuple[int, int]:
    """A rough (raw download, canonical Parquet) size in bytes of a month of a service."""
    tlc = config.tlc()
    kind = payload_kind(tlc.url_for(name, f"{month:%Y}", f"{month:%m}"))
    rows = ROWS_PER_MONTH[name]
    return rows * BYTES_PER_ROW[kind], rows * BYTES_PER_ROW["parquet"]


def _existing(path: Path) -> Path:
    """The path, or its nearest ancestor that exists (a lake root is made on first use)."""
    path = path.expanduser().absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _lake_months(name: str, months: list[dt.date]) -> set[dt.date]:
    """The months already complete in the lake: they need no more space."""
    from luigi_tasks.tasks.lake import lake_entries  # the tasks package: only when the lake is checked

    return {m for m in lake_entries(service(name), months) if m is not None}


def _size(n: float) -> str:
    return f"{n / 1e9:,.1f} GB" if n >= 1e9 else f"{n / 1e6:,.0f} MB"


def check_disk(
    services: Iterable[str],
    months: list[dt.date],
    sizes: MonthBytes = month_bytes,
    done: Callable[[str, list[dt.date]], set[dt.date]] = _lake_months,
) -> list[Check]:
    """The local space the range needs, estimated, against the free space where it goes.

    A local lake keeps each month's Parquet (and its download, with [lake] keep_raw); an object-store lake
    needs scratch for one month at a time per worker.
    """
    lake, keep_raw = open_lake(), config.lake().keep_raw
    todo = []
    for name in services:
        published = _published(name, months)
        try:
            finished = done(name, published)
        except PipelineError:
            finished = set()  # the lake check says why; count every month
        todo += [sizes(name, m) for m in published if m not in finished]
    if not todo:
        return [Check(OK, "disk", "every month of the range is in the lake already: nothing to download")]
    if lake.is_local:
        where = Path(lake.base)
        needed = sum(parquet + (raw if keep_raw else 0) for raw, parquet in todo)
        needed += 0 if keep_raw else max(raw for raw, _ in todo)  # a download lives until its month is converted
        what = f"disk for {len(todo)} month{'s' if len(todo) > 1 else ''} in {where}"
    else:
        where, needed = lake.scratch, max(raw + parquet for raw, parquet in todo)
        what = f"disk for scratch {where}"
    free = shutil.disk_usage(_existing(where)).free
    figures = f"needs ~{_size(needed)} (a rough estimate from typical month sizes), {_size(free)} free"
    if needed > free:
        return [Check(FAIL, what, f"{figures}: free some space, back up fewer months, or move [lake] root")]
    if needed > free * TIGHT:
        return [Check(WARN, what, f"{figures}: tight, the estimate is rough")]
    return [Check(OK, what, figures)]


# --- sinks --------------------------------------------------------------------------------------------------


def check_postgres() -> list[Check]:
    """Connects with [postgres] dsn (or libpq's PG* variables) and can create and read the marker table.

    The table is made in a transaction that is rolled back: the database is left as it was."""
    settings = config.postgres()
    marker = sql.checked_identifier(settings.marker_table, "[postgres] marker_table")
    what = f"postgres {postgres.describe_dsn(settings.dsn)}"
    try:
        with postgres.connection(settings.dsn) as conn, conn.cursor() as cur:
            postgres.ensure_marker_table(cur, marker)
            cur.execute(f"SELECT count(*) FROM {sql.quote_ident(marker)}")
            loads = cur.fetchone()[0]
            conn.rollback()
    except PipelineError as exc:
        return [Check(FAIL, "postgres", f"{exc} (check [postgres] dsn, and PGPASSWORD or ~/.pgpass for the password)")]
    return [Check(OK, what, f"connects; marker table {marker} can be created and read ({loads:,} loads marked)")]


def check_duckdb() -> list[Check]:
    """The DuckDB file's folder can be written, and the file (if it is there yet) opens now: no other process
    holds it (DuckDB lets one process at a time use a file it writes). A warning when the course's dbt sources
    cannot find the file by its name."""
    from luigi_tasks import duckdb as warehouse_file

    settings = config.duckdb()
    path = settings.file
    folder = writable(path.parent, f"duckdb folder {path.parent}", "[duckdb] path")
    if folder[0].status == FAIL:
        return folder
    # The course's dbt sources find the file by its name: another name is a warning, not a failure.
    problem = warehouse_file.course_name_problem(path)
    checks = [*folder, *([Check(WARN, f"duckdb {path}", problem)] if problem else [])]
    if not path.exists():
        return [*checks, Check(OK, f"duckdb {path}", "not there yet: the first load creates it")]
    warehouse = warehouse_file.Warehouse(path, settings.schema, settings.marker_table, lock_wait=0)
    try:
        with warehouse_file.connection(warehouse, read_only=True, what="duckdb") as conn:
            tables = conn.execute(
                "SELECT count(*) FROM duckdb_tables() WHERE lower(schema_name) = lower(?)", [settings.schema]
            )
            count = tables.fetchone()[0]
    except PipelineError as exc:
        return [*checks, Check(FAIL, f"duckdb {path}", str(exc).removeprefix("duckdb: "))]
    return [*checks, Check(OK, f"duckdb {path}", f"opens; {count} tables in schema {settings.schema}")]


def google_credentials(variable: str) -> Check:
    """Credentials for a Google client: none against an emulator, else application default credentials."""
    if os.environ.get(variable):
        return Check(OK, "google credentials", f"none needed: {variable} points at an emulator")
    import google.auth
    import google.auth.exceptions

    try:
        _, project = google.auth.default()
    except google.auth.exceptions.DefaultCredentialsError as exc:
        return Check(
            FAIL,
            "google credentials",
            f"none found ({_one_line(exc).split('. ')[0].rstrip('.')}): set GOOGLE_APPLICATION_CREDENTIALS to a"
            " service account's key file, or run `gcloud auth application-default login`",
        )
    if not (config.gcp().project or project):
        return Check(FAIL, "google credentials", "they name no project, and [gcp] project is empty: set it")
    return Check(OK, "google credentials", "application default credentials found")


def _bucket(settings: config.gcp):
    """The [gcp] bucket (its metadata), or PipelineError saying what to set or create."""
    if not settings.bucket:
        raise PipelineError("[gcp] bucket is empty: set it to an existing bucket")
    return gcs.bucket_or_error(gcs.client(settings), settings.bucket)


def check_gcs() -> list[Check]:
    settings = config.gcp()
    credentials = google_credentials("STORAGE_EMULATOR_HOST")
    if credentials.status == FAIL:
        return [credentials]
    bucket = _bucket(settings)
    return [credentials, Check(OK, f"gcs bucket {bucket.name}", f"exists, location {bucket.location}")]


def location_problem(dataset: str, bucket: str) -> str | None:
    """Why a BigQuery dataset cannot load from a GCS bucket in that location, or None when it can.

    BigQuery loads from GCS only when both are in one location; a dataset in the US multi-region may load
    from a bucket anywhere, and one in another multi-region from a bucket in a region inside it."""
    dataset_location, bucket_location = dataset.upper(), bucket.upper()
    if dataset_location in ("US", bucket_location):
        return None
    if dataset_location == "EU" and bucket_location.startswith("EUROPE-"):
        return None  # most europe-* regions are inside the EU multi-region (not London, Zurich)
    return (
        f"the dataset is in {dataset}, the bucket in {bucket}: a load from GCS needs both in one location "
        "(or the dataset in US); use a bucket in the dataset's location"
    )


def check_bigquery() -> list[Check]:
    """The dataset exists, and it can load from the bucket and run jobs in [gcp] location."""
    from google.api_core.exceptions import NotFound

    settings = config.gcp()
    credentials = google_credentials("BIGQUERY_EMULATOR_HOST")
    if credentials.status == FAIL:
        return [credentials]
    if not settings.dataset:
        return [credentials, Check(FAIL, "bigquery dataset", "[gcp] dataset is empty: set it to an existing dataset")]
    bq = bigquery.client(settings)
    dataset_id = f"{bq.project}.{settings.dataset}"
    with bigquery.api_errors(f"reading dataset {dataset_id}"):
        try:
            dataset = bq.get_dataset(dataset_id, **bq.calls)
        except NotFound:
            return [credentials, Check(FAIL, f"bigquery dataset {dataset_id}", "does not exist: create it first")]
    what = f"bigquery dataset {dataset_id}"
    results = [credentials, Check(OK, what, f"exists, location {dataset.location}")]
    if settings.location and settings.location.upper() != (dataset.location or "").upper():
        results.append(
            Check(FAIL, what, f"is in {dataset.location}, [gcp] location is {settings.location}: set it to match")
        )
    bucket = _bucket(settings)
    problem = location_problem(dataset.location or "US", bucket.location or "US")
    if problem:
        results.append(Check(FAIL, f"{what} and gcs bucket {bucket.name}", problem))
    else:
        results.append(
            Check(OK, f"{what} and gcs bucket {bucket.name}", "a load from the bucket can reach the dataset")
        )
    return results


def check_s3() -> list[Check]:
    import boto3

    settings = config.s3()
    found = boto3.Session().get_credentials()
    if found is None:
        return [
            Check(
                FAIL,
                "aws credentials",
                "none found: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE with ~/.aws/credentials,"
                " or run with an instance role",
            )
        ]
    credentials = Check(OK, "aws credentials", f"found ({found.method})")
    if not settings.bucket:
        return [credentials, Check(FAIL, "s3 bucket", "[s3] bucket is empty: set it to an existing bucket")]
    s3.check_bucket(s3.client(), settings.bucket)
    return [credentials, Check(OK, f"s3 bucket {settings.bucket}", "exists")]


def check_azure() -> list[Check]:
    """Azure's standard chain names an account and a credential (which one is said, never its value), and
    [azure] container exists in it."""
    from luigi_tasks.tasks import azure as azure_sink

    try:
        account = azure.account(config.azure().account)
    except azure.AccountError as exc:
        return [Check(FAIL, "azure credentials", str(exc))]
    credentials = Check(OK, "azure credentials", f"account {account.name}, from {account.source}")
    container = azure_sink.container()
    azure.check_container(azure_sink.service(), container)
    return [credentials, Check(OK, f"azure container {container}", "exists")]


# Each sink's checks; the lake's are run for every sink (they all read the lake). A sink not named here is
# reported as unchecked.
SINK_CHECKS: dict[str, Callable[[], list[Check]]] = {
    "lake": list,
    "postgres": check_postgres,
    "duckdb": check_duckdb,
    "gcs": check_gcs,
    "bigquery": check_bigquery,
    "s3": check_s3,
    "azure": check_azure,
}


def check_sinks(sinks: Iterable[str]) -> list[Check]:
    results = []
    for sink in sinks:
        check = SINK_CHECKS.get(sink)
        if check is None:
            results.append(Check(WARN, sink, "the doctor has no check for this sink"))
        else:
            results += guarded(sink, check)
    return results


# --- the scheduler ------------------------------------------------------------------------------------------

_SCHEDULER_KEYS = ("default_scheduler_url", "default_scheduler_host", "default_scheduler_port")


def check_scheduler(args: argparse.Namespace) -> list[Check]:
    """luigid accepts connections, when the command line or [core] names one (and not --local-scheduler)."""
    named = args.scheduler_url or args.scheduler_host or args.scheduler_port
    configured = any(luigi.configuration.get_config().has_option("core", key) for key in _SCHEDULER_KEYS)
    local = args.local_scheduler is not None and args.local_scheduler.lower() == "true"
    url = None if local or not (named or configured) else cli.scheduler_url(args)
    if url is None:
        return [Check(OK, "scheduler", "the local scheduler: nothing to reach")]
    problem = cli.scheduler_problem(url)
    if problem:
        return [Check(FAIL, "luigid", problem)]
    return [Check(OK, f"luigid {cli.shown_url(url)}", "accepts connections")]


# --- the command --------------------------------------------------------------------------------------------


def parse_args(argv: list[str]) -> argparse.Namespace:
    from luigi_tasks.tasks.backfill import ServicesParameter, months_between
    from luigi_tasks.tasks.base import MonthParameter, month_or_latest
    from luigi_tasks.tasks.ingest import SinksParameter
    from luigi_tasks.tasks.sinks import SINKS

    parser = argparse.ArgumentParser(
        prog="doctor",
        description="Check what a backfill of SERVICES from START to STOP into --sinks needs, before it starts.",
    )
    parser.add_argument("services", help="comma-separated services, or all: " + ", ".join(SERVICES))
    parser.add_argument("start", help="first month, YYYY-MM")
    parser.add_argument("stop", help="last month, YYYY-MM or latest")
    parser.add_argument("--sinks", default="lake", help="where the months go: " + ", ".join(SINKS))
    parser.add_argument("--local-scheduler", nargs="?", const="true", help="the run uses the local scheduler")
    parser.add_argument("--scheduler-host")
    parser.add_argument("--scheduler-port", type=int)
    parser.add_argument("--scheduler-url")
    args = parser.parse_args(argv)
    try:
        args.services = named_as(ServicesParameter(), "SERVICES").parse(args.services)
        start, stop = (
            month_or_latest(named_as(MonthParameter(), name).parse(value), args.services)
            for name, value in (("START", args.start), ("STOP", args.stop))
        )
        args.months = months_between(start, stop)
        args.sinks = named_as(SinksParameter(), "--sinks").parse(args.sinks)
    except (PipelineError, ValueError) as exc:
        parser.error(str(exc))
    if not args.months:
        parser.error(f"STOP {args.stop} is before START {args.start}")
    return args


def run_checks(args: argparse.Namespace) -> Iterator[Check]:
    """Every check, in turn (a slow one, such as a source that does not answer, shows which it is)."""
    yield from check_config()
    yield from guarded("source", lambda: check_source(args.services, args.months))
    yield from check_lake()
    yield from guarded("disk", lambda: check_disk(args.services, args.months))
    yield from check_sinks(args.sinks)
    yield from guarded("luigid", lambda: check_scheduler(args))


@contextlib.contextmanager
def impatient_clouds() -> Iterator[None]:
    """[gcp] timeout and retry_seconds at most PATIENCE seconds while the doctor runs: a cloud endpoint that does
    not answer is reported in seconds, not after the minutes of retries a run allows it."""
    try:
        settings = config.gcp()
    except Exception:  # an invalid [gcp] is reported by the config check; the cloud checks fail fast on it
        yield
        return
    parser = luigi.configuration.get_config()
    if not parser.has_section("gcp"):
        parser.add_section("gcp")
    old = {key: parser.get("gcp", key, None) for key in ("timeout", "retry_seconds")}
    parser.set("gcp", "timeout", str(min(settings.timeout, PATIENCE)))
    parser.set("gcp", "retry_seconds", str(min(settings.retry_seconds, PATIENCE)))
    Register.clear_instance_cache()  # config sections are cached instances
    try:
        yield
    finally:
        for key, value in old.items():
            if value is None:
                parser.remove_option("gcp", key)
            else:
                parser.set("gcp", key, value)
        Register.clear_instance_cache()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    failed = False
    with impatient_clouds():
        for check in run_checks(args):  # printed as each is made
            print(check.line, flush=True)
            failed |= check.status == FAIL
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
