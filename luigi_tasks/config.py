"""Configuration sections read from luigi.cfg (or LUIGI_CONFIG_PATH).

Each class is one section: `[tlc]` says where the source files are, `[lake]` where the local lake is.
"""

from __future__ import annotations

import configparser
import datetime as dt
import hashlib
import os
import re
import string
from pathlib import Path

import luigi

from luigi_tasks import catalog
from luigi_tasks.download import redact_url
from luigi_tasks.errors import DataError
from luigi_tasks.lake import Lake, open_lake
from luigi_tasks.parameters import ChoiceParameter, NamedParameterErrors
from luigi_tasks.quality import CHECKS, DEFAULT_LEVELS, DEFAULT_MAX_AMOUNT, DEFAULT_MAX_DISTANCE, Limits
from luigi_tasks.sql import IDENTIFIER_RULE, is_identifier

COURSE_CSV_URL = (
    "https://github.com/DataTalksClub/nyc-tlc-data/releases/download/{service}/{service}_tripdata_{year}-{month}.csv.gz"
)
TLC_PARQUET_URL = "https://d37ci6vzurychx.cloudfront.net/trip-data/{service}_tripdata_{year}-{month}.parquet"
ZONES_URL = "https://github.com/DataTalksClub/nyc-tlc-data/releases/download/misc/taxi_zone_lookup.csv"
_URL_PLACEHOLDERS = ("{service}", "{year}", "{month}")
_URL_EXPECTED = "expected a URL template with {service}, {year} and {month} and no other placeholder"


def _placeholders(template: str) -> list[str]:
    """Each replacement field as written, e.g. '{month}' or '{month!r}'; ValueError if the braces do not pair."""
    return [
        "{" + name + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "") + "}"
        for _, name, spec, conversion in string.Formatter().parse(template)
        if name is not None
    ]


def check_url_template(template: str, key: str) -> None:
    """A month's URL must differ by service, year and month, and format without a KeyError at download time."""
    shown = redact_url(template)  # a signed URL's query string is a secret
    try:
        found = _placeholders(template)
    except ValueError as exc:
        raise DataError(f"{key} {shown!r} is not a valid template ({exc}): {_URL_EXPECTED}") from None
    unknown = [p for p in found if p not in _URL_PLACEHOLDERS]
    if unknown:
        raise DataError(f"{key} {shown!r} has an unknown placeholder {unknown[0]}: {_URL_EXPECTED}")
    missing = [p for p in _URL_PLACEHOLDERS if p not in found]
    if missing:
        raise DataError(f"{key} {shown!r} lacks {' and '.join(missing)}: {_URL_EXPECTED}")


def check_setting(ok: bool, key: str, value: object, expected: str) -> None:
    """One line naming the setting, its value and what it should be, unless `ok`."""
    if not ok:
        raise DataError(f"{key} {value!r} is out of range: expected {expected}")


class _Section(NamedParameterErrors, luigi.Config):
    """A section of luigi.cfg whose unreadable values fail in one line that names the key, never the value.

    luigi's parser interpolates `%(name)s` and `${VAR}`: a literal `%` (a percent-encoded password, a presigned
    URL) must be written `%%`, and configparser's own error quotes the value from the `%` on.
    """

    @classmethod
    def get_param_values(cls, params, args, kwargs):
        _check_readable(cls.get_task_family())  # before luigi reads the values: its error would show them
        return super().get_param_values(params, args, kwargs)


def _check_readable(section: str) -> None:
    parser = luigi.configuration.get_config()
    if not parser.has_section(section):
        return
    for option in parser.options(section):
        try:
            parser.get(section, option)
        except configparser.InterpolationError:
            raise DataError(
                f"[{section}] {option} cannot be read from the config file: write a literal % as %% (luigi reads"
                " %(name)s and ${VAR} in values) and set the variables it names; the value is not shown"
            ) from None


class tlc(_Section):  # noqa: N801 - the class name is the config section's name
    source = ChoiceParameter(
        choices=["auto", "csv", "parquet"],
        default="auto",
        description="Which source files to download: auto (the course's csv.gz backups for the months they "
        "cover, 2019-01..2021-07, the TLC's Parquet for every other month), csv (the backups only) or parquet "
        "(the TLC's files only)",
    )
    csv_url = luigi.Parameter(
        default=COURSE_CSV_URL,
        description="URL template of a month's CSV (.csv.gz or plain .csv); {service}, {year}, {month}",
    )
    parquet_url = luigi.Parameter(
        default=TLC_PARQUET_URL,
        description="URL template of a month's Parquet file; {service}, {year}, {month}",
    )
    zones_url = luigi.Parameter(default=ZONES_URL, description="URL of the taxi zone lookup CSV")
    retries = luigi.IntParameter(
        default=4,
        description="Retries after a lost or refused connection, timeout, short read, HTTP 5xx or 429 (not after a "
        "404, a host name that does not resolve or a certificate that does not verify)",
    )
    retry_backoff = luigi.FloatParameter(
        default=2.0,
        description="Seconds before the first retry; doubles after each. A 429 or 5xx with Retry-After waits what it "
        "asks instead, up to 300 s",
    )
    timeout = luigi.FloatParameter(
        default=60.0, description="Seconds to wait for a connection or for the next bytes of a download"
    )
    publication_lag_months = luigi.IntParameter(
        default=3,
        description="The most months before the current one that a month may still be on its way to the source: "
        "`latest` looks back this far for the newest month the source has, and a month in that window that the "
        "source lacks at the end of a range is 'not published yet', not a failure",
    )
    new_columns = ChoiceParameter(
        choices=list(catalog.NEW_COLUMN_POLICIES),
        default="keep",
        description="What a source column the catalogue does not know does: keep (into the lake file after the "
        "canonical columns, with a normalised type, and added to every warehouse table as a nullable column), drop, "
        "or refuse the month",
    )
    unknown_columns = ChoiceParameter(
        choices=["error", "drop"],
        default="error",
        description="The older spelling of new_columns (error: refuse, drop: drop), read when only it is set",
    )

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        check_url_template(self.csv_url, "[tlc] csv_url")
        check_url_template(self.parquet_url, "[tlc] parquet_url")
        check_setting(self.retries >= 0, "[tlc] retries", self.retries, "0 or more retries")
        check_setting(self.retry_backoff >= 0, "[tlc] retry_backoff", self.retry_backoff, "0 or more seconds")
        check_setting(self.timeout > 0, "[tlc] timeout", self.timeout, "more than 0 seconds")
        months = self.publication_lag_months
        check_setting(0 <= months <= 24, "[tlc] publication_lag_months", months, "0 to 24 months")

    @property
    def column_policy(self) -> str:
        """new_columns, or what an older config file says with unknown_columns alone."""
        parser = luigi.configuration.get_config()
        if parser.has_option("tlc", "unknown_columns") and not parser.has_option("tlc", "new_columns"):
            return {"error": "refuse", "drop": "drop"}[self.unknown_columns]
        return self.new_columns

    def url_for(self, service: str, year: str, month: str) -> str:
        template = getattr(self, self.url_key(service, dt.date(int(year), int(month), 1)))
        return template.format(service=service, year=year, month=month)

    def url_key(self, service: str, month: dt.date) -> str:
        """Which template a month's file comes from: 'csv_url' or 'parquet_url'."""
        csv = self.source == "csv" or (
            self.source == "auto" and catalog.has_course_csv(catalog.service(service), month)
        )
        return "csv_url" if csv else "parquet_url"


class lake(_Section):  # noqa: N801
    root = luigi.Parameter(
        default="lake",
        description="The lake: a local directory (relative to the working dir), gs://bucket/prefix, "
        "s3://bucket/prefix or az://container/prefix (abfs:// and abfss:// too); every worker on every machine "
        "must see the same one",
    )
    scratch = luigi.Parameter(
        default="",
        description="Local directory for downloads and conversions on their way to an object-store lake; "
        "empty: the system temp dir",
    )
    row_group_rows = luigi.IntParameter(
        default=131_072, description="Rows per Parquet row group in the canonical files"
    )
    keep_raw = luigi.BoolParameter(
        default=True,
        parsing=luigi.BoolParameter.EXPLICIT_PARSING,
        description="Keep the downloaded file in {root}/raw after conversion (false deletes it)",
    )

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        check_setting(self.row_group_rows > 0, "[lake] row_group_rows", self.row_group_rows, "1 or more rows")

    def open(self) -> Lake:
        """The lake, checked once per process: a forked worker process makes its own store client (one
        inherited across fork is not safe to use). Emulator endpoints are part of what it is."""
        endpoints = tuple(os.environ.get(v, "") for v in ("STORAGE_EMULATOR_HOST", "AWS_ENDPOINT_URL"))
        return open_lake(self.root, self.scratch, (*endpoints, azure_endpoint(), str(os.getpid())))


class postgres(_Section):  # noqa: N801
    dsn = luigi.Parameter(
        default="",
        description="libpq URI or conninfo; empty uses libpq's PG* env vars and ~/.pgpass. Keep passwords "
        "out of it: use PGPASSWORD or ~/.pgpass",
    )
    marker_table = luigi.Parameter(
        default="table_updates",
        description="Table of completed loads (the shape of luigi's PostgresTarget marker table)",
    )
    lock_timeout = luigi.FloatParameter(
        default=60.0,
        description="Seconds a load waits for a table lock another session holds (a long query, an open "
        "transaction) before it fails, in attempts of one second that other queries of the table queue behind at "
        "most. 0: no limit",
    )

    load_streams = luigi.IntParameter(
        default=2,
        description="Connections that COPY one month at once (the server parses each on its own core); "
        "1 to 16, about the server's free cores",
    )

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        check_setting(self.lock_timeout >= 0, "[postgres] lock_timeout", self.lock_timeout, "0 or more seconds")
        check_setting(1 <= self.load_streams <= 16, "[postgres] load_streams", self.load_streams, "1 to 16")


# A size DuckDB's memory_limit accepts.
_DUCKDB_MEMORY = re.compile(r"^\s*\d+(\.\d+)?\s*(B|KB|MB|GB|TB|KiB|MiB|GiB|TiB)\s*$", re.IGNORECASE)


class duckdb(_Section):  # noqa: N801
    path = luigi.Parameter(
        default="",
        description="The DuckDB database file; empty: taxi_rides_ny.duckdb beside a local lake (in its parent "
        "directory), or in $LUIGI_TASKS_STATE_DIR (default ~/.local/state/luigi_tasks) when the lake is remote",
    )
    schema = luigi.Parameter(
        default="prod", description="Schema of the tables (the course's dbt project reads its sources from prod)"
    )
    table = luigi.Parameter(default="{service}_tripdata", description="Table of a service's trips; {service}")
    zones_table = luigi.Parameter(
        default="zones",
        description="Table of the zone lookup (not taxi_zone_lookup: the course's dbt project seeds a table of that "
        "name into its target's schema, prod under --target prod)",
    )
    marker_table = luigi.Parameter(default="table_updates", description="Table of completed loads, in the schema")
    lock_wait = luigi.FloatParameter(
        default=60.0,
        description="Seconds a load or a check waits for the file while another process (a duckdb CLI, another "
        "luigi run) holds it, before it fails",
    )
    memory_limit = luigi.Parameter(
        default="512MB",
        description="Most memory DuckDB's buffers take in a load or a check (DuckDB's memory_limit, e.g. 512MB, "
        "2GB); the process peaks 230-300 MB above it, so the default fits a 2 GB machine",
    )
    threads = luigi.IntParameter(
        default=0, description="Threads DuckDB works with in a load; 0: one per core (DuckDB's default)"
    )
    temp_directory = luigi.Parameter(
        default="",
        description="Where DuckDB spills what does not fit memory_limit; empty: beside the file (FILE.tmp, DuckDB's "
        "default)",
    )

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        for key in ("schema", "zones_table", "marker_table"):
            value = getattr(self, key)
            check_setting(is_identifier(value), f"[duckdb] {key}", value, IDENTIFIER_RULE)
        try:
            ok = _placeholders(self.table) == ["{service}"] and is_identifier(self.table.format(service="fhvhv"))
        except ValueError:
            ok = False
        check_setting(ok, "[duckdb] table", self.table, "{service} and letters, digits, _ (e.g. {service}_tripdata)")
        check_setting(self.lock_wait >= 0, "[duckdb] lock_wait", self.lock_wait, "0 or more seconds")
        check_setting(
            bool(_DUCKDB_MEMORY.match(self.memory_limit)),
            "[duckdb] memory_limit",
            self.memory_limit,
            "a size such as 512MB or 2GB (units B, KB, MB, GB, TB, KiB, MiB, GiB, TiB)",
        )
        check_setting(0 <= self.threads <= 1024, "[duckdb] threads", self.threads, "0 (one per core) to 1024")

    @property
    def file(self) -> Path:
        if self.path:
            return Path(self.path).expanduser().resolve()
        if "://" not in lake().root:
            return Path(lake().root).expanduser().resolve().parent / "taxi_rides_ny.duckdb"
        return state_dir() / "taxi_rides_ny.duckdb"

    def table_for(self, service: str | None) -> str:
        """The table of a service's trips, or of the zone lookup for None."""
        return self.zones_table if service is None else self.table.format(service=service)


def _level(check: str, level: str) -> luigi.FloatParameter:
    what = "of the previous month's rows" if check == "row_change" else "of the month's rows"
    verdict = "the month is refused" if level == "fail" and check != "row_change" else f"it is flagged {level}"
    return luigi.FloatParameter(
        default=DEFAULT_LEVELS[check][level == "fail"],
        description=f"Fraction {what} failing the {check} check above which {verdict}",
    )


class quality(_Section):  # noqa: N801
    null_pickup_warn, null_pickup_fail = _level("null_pickup", "warn"), _level("null_pickup", "fail")
    outside_month_warn, outside_month_fail = _level("outside_month", "warn"), _level("outside_month", "fail")
    negative_amount_warn, negative_amount_fail = _level("negative_amount", "warn"), _level("negative_amount", "fail")
    absurd_amount_warn, absurd_amount_fail = _level("absurd_amount", "warn"), _level("absurd_amount", "fail")
    negative_distance_warn = _level("negative_distance", "warn")
    negative_distance_fail = _level("negative_distance", "fail")
    absurd_distance_warn, absurd_distance_fail = _level("absurd_distance", "warn"), _level("absurd_distance", "fail")
    unknown_location_warn = _level("unknown_location", "warn")
    unknown_location_fail = _level("unknown_location", "fail")
    row_change_warn, row_change_fail = _level("row_change", "warn"), _level("row_change", "fail")
    max_amount = luigi.FloatParameter(
        default=DEFAULT_MAX_AMOUNT,
        description="Dollars above which fare_amount, total_amount or base_passenger_fare is absurd",
    )
    max_distance = luigi.FloatParameter(
        default=DEFAULT_MAX_DISTANCE, description="Miles above which trip_distance or trip_miles is absurd"
    )

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        for check in CHECKS:
            warn, fail = getattr(self, f"{check}_warn"), getattr(self, f"{check}_fail")
            check_setting(warn >= 0, f"[quality] {check}_warn", warn, "a fraction of 0 or more")
            check_setting(fail >= warn, f"[quality] {check}_fail", fail, f"at least {check}_warn ({warn:g})")
        check_setting(self.max_amount > 0, "[quality] max_amount", self.max_amount, "more than 0 dollars")
        check_setting(self.max_distance > 0, "[quality] max_distance", self.max_distance, "more than 0 miles")

    def limits(self) -> Limits:
        levels = {check: (getattr(self, f"{check}_warn"), getattr(self, f"{check}_fail")) for check in CHECKS}
        return Limits(levels, self.max_amount, self.max_distance)


class history(_Section):  # noqa: N801
    path = luigi.Parameter(
        default="",
        description="SQLite file of this machine's task runs; empty: history.sqlite in a local lake's root, "
        "or in $LUIGI_TASKS_STATE_DIR (default ~/.local/state/luigi_tasks) when the lake is remote",
    )

    @property
    def file(self) -> Path:
        if self.path:
            return Path(self.path)
        if "://" not in lake().root:
            return Path(lake().root) / "history.sqlite"
        return state_dir() / "history.sqlite"


def state_dir() -> Path:
    """This machine's own state (run history, luigid's state): never in a shared lake."""
    return Path(os.environ.get("LUIGI_TASKS_STATE_DIR") or Path.home() / ".local/state/luigi_tasks")


class progress(_Section):  # noqa: N801
    interval = luigi.FloatParameter(
        default=30.0,
        description="Seconds between progress lines of a running download, conversion or load when stderr is not "
        "a terminal (cron, a log file); on a terminal the line is redrawn in place",
    )

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        check_setting(self.interval >= 0, "[progress] interval", self.interval, "0 or more seconds")


class notify(_Section):  # noqa: N801
    webhook_url = luigi.Parameter(
        default="",
        description="URL that gets a JSON POST for every failed task (e.g. a Slack incoming webhook); empty: none",
    )


# Names that reach URLs, object paths and BigQuery SQL: each service's own naming rule, nothing looser.
_NAME_RULES = {
    "project": (re.compile(r"^(?:[a-z][a-z0-9.-]*[a-z0-9]:)?[a-z][a-z0-9-]{4,28}[a-z0-9]$"), "a Google Cloud project"),
    "gcs_bucket": (re.compile(r"^[a-z0-9][a-z0-9_.-]{1,220}[a-z0-9]$"), "a GCS bucket name"),
    "dataset": (re.compile(r"^[A-Za-z0-9_]{1,1024}$"), "a BigQuery dataset id (letters, digits, underscores)"),
    "s3_bucket": (re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$"), "an S3 bucket name"),
    "azure_container": (
        re.compile(r"^(?!.*--)[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$"),
        "an Azure container name (3 to 63 lowercase letters, digits and single hyphens)",
    ),
    "azure_account": (
        re.compile(r"^[a-z0-9]{3,24}$"),
        "an Azure storage account name (3 to 24 lowercase letters, digits)",
    ),
}


def _check_name(value: str, rule: str, key: str) -> None:
    pattern, what = _NAME_RULES[rule]
    if value and (not pattern.match(value) or ".." in value):
        raise DataError(f"{key} {value!r} is not {what}")


class gcp(_Section):  # noqa: N801
    project = luigi.Parameter(default="", description="Google Cloud project; empty: the credentials' default")
    bucket = luigi.Parameter(default="", description="GCS bucket of the lake (it must exist)")
    prefix = luigi.Parameter(default="raw", description="Object prefix: gs://{bucket}/{prefix}/{service}/{year}/...")
    dataset = luigi.Parameter(default="trips_data_all", description="BigQuery dataset (it must exist)")
    location = luigi.Parameter(default="US", description="BigQuery location of the jobs")
    timeout = luigi.FloatParameter(default=60.0, description="Seconds one GCS or BigQuery request may take")
    retry_seconds = luigi.FloatParameter(
        default=300.0,
        description="Seconds to keep retrying transient GCS and BigQuery errors (5xx, 429, lost connections)",
    )

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        _check_name(self.project, "project", "[gcp] project")
        _check_name(self.bucket, "gcs_bucket", "[gcp] bucket")
        _check_name(self.dataset, "dataset", "[gcp] dataset")


class s3(_Section):  # noqa: N801
    bucket = luigi.Parameter(
        default="", description="S3 bucket of the mirror (it must exist); credentials: boto3's chain"
    )
    prefix = luigi.Parameter(default="raw", description="Key prefix: s3://{bucket}/{prefix}/{service}/{year}/...")

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        _check_name(self.bucket, "s3_bucket", "[s3] bucket")


class azure(_Section):  # noqa: N801
    account = luigi.Parameter(
        default="",
        description="Storage account of the mirror and of an az:// lake; empty: the one "
        "AZURE_STORAGE_CONNECTION_STRING or AZURE_STORAGE_ACCOUNT_NAME names. Credentials: Azure's standard chain, "
        "never this file",
    )
    container = luigi.Parameter(default="", description="Container of the mirror (it must exist)")
    prefix = luigi.Parameter(default="raw", description="Blob prefix: {container}/{prefix}/{service}/{year}/...")

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        _check_name(self.account, "azure_account", "[azure] account")
        _check_name(self.container, "azure_container", "[azure] container")


def azure_endpoint() -> str:
    """Which Azure endpoint and credential are in force, as a digest (it keys a cache, and is a secret)."""
    found = os.environ.get("AZURE_STORAGE_CONNECTION_STRING", "") + os.environ.get("AZURE_STORAGE_ACCOUNT_NAME", "")
    return hashlib.sha256(found.encode()).hexdigest()[:16] if found else ""
