"""Load lake months from GCS into BigQuery with the official client, one month replaced atomically.

A service's native table has the catalogue's schema plus `source_month DATE`, is partitioned by month
on it and clustered by pickup time and PULocationID. A month is replaced in two steps that real
BigQuery and the emulator both run: a load job into a staging table with the explicit schema, then
one multi-statement transaction (DELETE the month, INSERT ... SELECT from staging); the staging table
is dropped after. Done = the month's row count equals the manifest's; all months of a table are
counted in one query.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import secrets
from collections.abc import Iterator

from google.api_core import exceptions as gexc
from google.auth.credentials import AnonymousCredentials
from google.cloud import bigquery
from google.cloud.bigquery.retry import DEFAULT_JOB_RETRY, DEFAULT_RETRY

from luigi_tasks import config
from luigi_tasks.catalog import AMOUNT, CODE, LINEAGE_COLUMN, TEXT, TIME, ZONES, Dataset, table_name
from luigi_tasks.errors import DataError, PipelineError

log = logging.getLogger(__name__)

_BQ_TYPES = {CODE: "INT64", AMOUNT: "FLOAT64", TIME: "DATETIME", TEXT: "STRING"}


class Client(bigquery.Client):
    """The official client, plus `calls`: the timeout and retry every request of this module is made with.

    The library's own defaults retry for up to 600 s with no timeout on a request, so a hung endpoint
    would hold a worker for ever; `job_retry` re-runs idempotent queries whose job failed transiently.
    """

    def __init__(self, *, timeout: float, retry_seconds: float, **kwargs) -> None:
        super().__init__(**kwargs)
        self.calls = {"timeout": timeout, "retry": DEFAULT_RETRY.with_timeout(retry_seconds)}
        self.job_retry = DEFAULT_JOB_RETRY.with_timeout(retry_seconds)


def client(settings: config.gcp) -> Client:
    """The official client; anonymous against the emulator (BIGQUERY_EMULATOR_HOST), ADC otherwise."""
    patience = {"timeout": settings.timeout, "retry_seconds": settings.retry_seconds}
    emulator = os.environ.get("BIGQUERY_EMULATOR_HOST")
    if emulator:
        endpoint = emulator if "://" in emulator else f"http://{emulator}"
        return Client(project=settings.project, credentials=AnonymousCredentials(),
                      client_options={"api_endpoint": endpoint}, **patience)  # fmt: skip
    return Client(project=settings.project or None, location=settings.location or None, **patience)


def describe(exc: gexc.GoogleAPIError) -> str:
    return exc.message if isinstance(exc, gexc.GoogleAPICallError) else str(exc)


def schema(dataset: Dataset, with_lineage: bool) -> list[bigquery.SchemaField]:
    fields = [bigquery.SchemaField(c.name, _BQ_TYPES[c.type]) for c in dataset.columns]
    if with_lineage:
        fields.append(bigquery.SchemaField(LINEAGE_COLUMN, "DATE", mode="REQUIRED"))
    return fields


def _table_id(bq: Client, bq_dataset: str, table: str) -> str:
    return f"{bq.project}.{bq_dataset}.{table}"


def check_dataset(bq: Client, bq_dataset: str) -> None:
    try:
        bq.get_dataset(f"{bq.project}.{bq_dataset}", **bq.calls)
    except gexc.NotFound:
        raise PipelineError(f"BigQuery dataset {bq.project}.{bq_dataset} does not exist: create it first") from None


def ensure_table(bq: Client, bq_dataset: str, dataset: Dataset) -> str:
    """Create the service's table on first use; an existing one must match the catalogue exactly."""
    table_id = _table_id(bq, bq_dataset, table_name(dataset))
    monthly = dataset is not ZONES
    expected = [(f.name, f.field_type) for f in schema(dataset, with_lineage=monthly)]
    try:
        existing = bq.get_table(table_id, **bq.calls)
    except gexc.NotFound:
        table = bigquery.Table(table_id, schema=schema(dataset, with_lineage=monthly))
        if monthly:
            table.time_partitioning = bigquery.TimePartitioning(
                type_=bigquery.TimePartitioningType.MONTH, field=LINEAGE_COLUMN
            )
            table.clustering_fields = [dataset.pickup_column, "PULocationID"]
        bq.create_table(table, exists_ok=True, **bq.calls)
        return table_id
    found = [(f.name, f.field_type) for f in existing.schema]
    if found != expected:
        missing = [n for n, _ in expected if n not in dict(found)]
        extra = [n for n, _ in found if n not in dict(expected)]
        changed = [f"{n} is {dict(found)[n]}, expected {t}" for n, t in expected if dict(found).get(n, t) != t]
        problems = (["missing " + ", ".join(missing)] if missing else []) + (
            ["unexpected " + ", ".join(extra)] if extra else []
        )
        raise DataError(
            f"BigQuery table {table_id} does not match the {dataset.name} catalogue: "
            f"{'; '.join(problems + changed) or 'columns in another order'}. Nothing was changed"
        )
    return table_id


def _run(bq: Client, start, job_id: str):
    """Start a job under a known id; if the request is retried and the job exists, wait for that job."""
    try:
        job = start(job_id)
    except gexc.Conflict:
        job = bq.get_job(job_id, **bq.calls)
    try:
        return job.result(retry=bq.calls["retry"])
    except gexc.GoogleAPICallError as exc:
        raise PipelineError(f"BigQuery job {job_id}: {exc.message}") from None


@contextlib.contextmanager
def api_errors(what: str) -> Iterator[None]:
    """The client's errors, retries given up included, as one line saying what was being done."""
    try:
        yield
    except gexc.GoogleAPIError as exc:
        raise PipelineError(f"BigQuery, {what}: {describe(exc)}") from None


def load_month(bq: Client, uri: str, *, bq_dataset: str, dataset: Dataset, month: dt.date, expected_rows: int) -> int:
    """Replace one month of the service's table with the Parquet at `uri`; returns the month's rows."""
    with api_errors(f"loading {dataset.name} {month:%Y-%m} into {bq.project}.{bq_dataset}"):
        return _replace_month(bq, uri, bq_dataset, dataset, month, expected_rows)


def _replace_month(bq: Client, uri: str, bq_dataset: str, dataset: Dataset, month: dt.date, expected_rows: int) -> int:
    check_dataset(bq, bq_dataset)
    table_id = ensure_table(bq, bq_dataset, dataset)
    _drop_stale_staging(bq, bq_dataset, f"_staging_{table_name(dataset)}_{month:%Y%m}_")
    attempt = secrets.token_hex(4)  # job ids: one per (table, month, attempt)
    job_prefix = f"luigi_tasks_{table_name(dataset)}_{month:%Y%m}_{attempt}"
    staging = _table_id(bq, bq_dataset, f"_staging_{table_name(dataset)}_{month:%Y%m}_{attempt}")
    # The staging table expires by itself: a run killed after the commit but before the drop below
    # leaves nothing behind for long (and the next load of the month drops it at once).
    staging_table = bigquery.Table(staging, schema=schema(dataset, with_lineage=False))
    staging_table.expires = dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=1)
    bq.create_table(staging_table, **bq.calls)
    load_config = bigquery.LoadJobConfig(
        source_format=bigquery.SourceFormat.PARQUET,
        schema=schema(dataset, with_lineage=False),
        write_disposition=bigquery.WriteDisposition.WRITE_TRUNCATE,
    )
    _run(bq, lambda job_id: bq.load_table_from_uri(uri, staging, job_config=load_config, job_id=job_id, **bq.calls),
         f"{job_prefix}_load")  # fmt: skip
    try:
        columns = ", ".join(f"`{c.name}`" for c in dataset.columns)
        # The month is a date, written as a literal: script parameters are not supported everywhere.
        month_literal = f"DATE '{month:%Y-%m-%d}'"
        script = f"""
            BEGIN TRANSACTION;
            DELETE FROM `{table_id}` WHERE {LINEAGE_COLUMN} = {month_literal};
            INSERT INTO `{table_id}` ({columns}, {LINEAGE_COLUMN}) SELECT {columns}, {month_literal} FROM `{staging}`;
            COMMIT TRANSACTION;
        """
        # job_retry=None: a failed job is not retried under the same id (the attempt's id would clash).
        _run(bq, lambda job_id: bq.query(script, job_id=job_id, job_retry=None, **bq.calls), f"{job_prefix}_replace")
    finally:
        _drop_staging(bq, staging)
    rows = month_counts(bq, bq_dataset, dataset).get(month, 0)
    if rows != expected_rows:
        raise PipelineError(
            f"{table_id} holds {rows:,} rows for {month:%Y-%m} after the load, expected {expected_rows:,}"
        )
    return rows


def _drop_staging(bq: Client, staging: str) -> None:
    try:
        bq.delete_table(staging, not_found_ok=True, **bq.calls)
    except gexc.GoogleAPIError as exc:  # it expires by itself, and the month's next load drops it
        log.warning("could not drop the staging table %s: %s", staging, describe(exc))


def _drop_stale_staging(bq: Client, bq_dataset: str, prefix: str) -> None:
    """Staging tables of this month left by a killed attempt (luigi runs one attempt of a month at a time)."""
    for table in bq.list_tables(f"{bq.project}.{bq_dataset}", **bq.calls):
        if table.table_id.startswith(prefix):
            bq.delete_table(table, not_found_ok=True, **bq.calls)


def month_counts(bq: Client, bq_dataset: str, dataset: Dataset) -> dict[dt.date, int]:
    """Rows per source_month of the service's table, in one query (empty if the table does not exist)."""
    table_id = _table_id(bq, bq_dataset, table_name(dataset))
    sql = f"SELECT {LINEAGE_COLUMN}, COUNT(*) AS n FROM `{table_id}` GROUP BY 1"
    with api_errors(f"counting the months of {table_id}"):
        try:
            result = bq.query(sql, job_retry=bq.job_retry, **bq.calls).result(retry=bq.calls["retry"])
            return {row[0]: row[1] for row in result}
        except (gexc.NotFound, gexc.BadRequest):
            return {}  # no table, or not ours (no source_month): nothing is done; a load explains the conflict


def load_zones(bq: Client, uri: str, *, bq_dataset: str) -> int:
    """Replace the zones table with the lookup: one load job with WRITE_TRUNCATE is atomic."""
    with api_errors(f"loading the zone lookup into {bq.project}.{bq_dataset}"):
        return _replace_zones(bq, uri, bq_dataset)


def _replace_zones(bq: Client, uri: str, bq_dataset: str) -> int:
    check_dataset(bq, bq_dataset)
    table_id = ensure_table(bq, bq_dataset, ZONES)
    config = bigquery.LoadJobConfig(
        source_format=bigquery.SourceFormat.PARQUET,
        schema=schema(ZONES, with_lineage=False),
        write_disposition=bigquery.WriteDisposition.WRITE_TRUNCATE,
    )
    job_id = f"luigi_tasks_zones_{secrets.token_hex(4)}"
    _run(bq, lambda jid: bq.load_table_from_uri(uri, table_id, job_config=config, job_id=jid, **bq.calls), job_id)
    return bq.get_table(table_id, **bq.calls).num_rows


def table_exists(bq: Client, table) -> bool:
    try:
        bq.get_table(table, **bq.calls)
    except gexc.NotFound:
        return False
    return True


def zones_rows(bq: Client, bq_dataset: str) -> int:
    table_id = _table_id(bq, bq_dataset, "zones")
    with api_errors(f"reading {table_id}"):
        try:
            return bq.get_table(table_id, **bq.calls).num_rows or 0
        except gexc.NotFound:
            return 0


def external_table(bq: Client, bq_dataset: str, dataset: Dataset, source_uri: str) -> bigquery.Table:
    """The definition of an external table over every month of a service in the lake bucket.

    The schema is the catalogue's, never autodetected: every month was written with it, so the table
    reads all months without a type clash. Only real BigQuery runs external tables.
    """
    table = bigquery.Table(_table_id(bq, bq_dataset, f"{table_name(dataset)}_external"), schema=schema(dataset, False))
    config = bigquery.ExternalConfig(bigquery.ExternalSourceFormat.PARQUET)
    config.source_uris = [source_uri]
    config.autodetect = False
    table.external_data_configuration = config
    return table
