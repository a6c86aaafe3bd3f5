"""Load lake months from GCS into BigQuery with the official client, one month replaced atomically.

A service's native table has the catalogue's schema plus `source_month DATE`, is partitioned by month
on it and clustered by pickup time and PULocationID. A month is replaced in two steps that real
BigQuery and the emulator both run: a load job into a staging table with the file's own columns, then
one multi-statement transaction (DELETE the month, INSERT ... SELECT from staging); the staging table
is dropped after. A column the month's file brings, or the catalogue has and the table lacks, is
added to the table first as a nullable column. Done = the month's row count equals the manifest's;
all months of a table are counted in one query.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import secrets
from collections.abc import Iterator, Sequence

import pyarrow as pa
from google.api_core import exceptions as gexc
from google.auth.credentials import AnonymousCredentials
from google.cloud import bigquery
from google.cloud.bigquery.retry import DEFAULT_JOB_RETRY, DEFAULT_RETRY
from google.cloud.bigquery.schema import LEGACY_TO_STANDARD_TYPES

from luigi_tasks import config
from luigi_tasks.catalog import AMOUNT, CODE, LINEAGE_COLUMN, TEXT, TIME, ZONES, Dataset, table_name
from luigi_tasks.errors import DataError, PipelineError
from luigi_tasks.sql import added_by, column_problems, columns_to_add, file_columns, is_ours

log = logging.getLogger(__name__)

_BQ_TYPES = {CODE: "INT64", AMOUNT: "FLOAT64", TIME: "DATETIME", TEXT: "STRING"}
_SCHEMA_ATTEMPTS = 5  # reads of a table whose schema other loads change meanwhile


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


def file_fields(file_schema: pa.Schema, what: str) -> list[bigquery.SchemaField]:
    """A lake file's columns as BigQuery fields, in the file's order (the emulator loads Parquet by position)."""
    return [bigquery.SchemaField(name, type_) for name, type_, _ in file_columns(file_schema, _BQ_TYPES, what)]


def _standard_type(field_type: str) -> str:
    """A field's type as standard SQL names it: BigQuery answers INTEGER and FLOAT for INT64 and FLOAT64 columns."""
    standard = LEGACY_TO_STANDARD_TYPES.get(field_type, field_type)
    return getattr(standard, "value", standard)


def ensure_table(
    bq: Client, bq_dataset: str, dataset: Dataset, month: dt.date | None = None, file_schema: pa.Schema | None = None
) -> str:
    """Create the service's table on first use, and give a table of ours, as nullable columns, those of the
    catalogue and of the month's file (`file_schema`) it lacks, each described with the month that added it.

    Ours: `sql.is_ours` (the lineage column is there, the catalogue's columns have its types); another table is
    refused. A column of the file that the table has with another type is refused, naming the month that added it.
    """
    table_id = _table_id(bq, bq_dataset, table_name(dataset))
    monthly = dataset is not ZONES
    catalogue = schema(dataset, with_lineage=monthly)
    expected = [(f.name, f.field_type) for f in catalogue]
    what = f"{table_name(dataset)}:{month:%Y-%m}" if month else table_name(dataset)
    incoming = [] if file_schema is None else file_columns(file_schema, _BQ_TYPES, what)
    for _ in range(_SCHEMA_ATTEMPTS):
        try:
            existing = bq.get_table(table_id, **bq.calls)
        except gexc.NotFound:
            _create_table(bq, table_id, dataset, catalogue, incoming, month)
            continue  # read back what is there: another load may have made it meanwhile
        found = [(f.name, _standard_type(f.field_type), f.description) for f in existing.schema]
        pairs = [(name, type_) for name, type_, _ in found]
        required = [LINEAGE_COLUMN] if monthly else [name for name, _ in expected]
        if not is_ours(pairs, expected, required, case_sensitive=False):
            raise DataError(
                f"BigQuery table {table_id} does not match the {dataset.name} catalogue: "
                f"{'; '.join(column_problems(pairs, expected, case_sensitive=False))}. Nothing was changed"
            )
        added = columns_to_add(found, expected, incoming, case_sensitive=False, what=what, table=table_id)
        if not added:
            return table_id
        try:
            _add_columns(bq, existing, added, added_by(dataset.name, month))
        except gexc.PreconditionFailed:
            continue  # another load changed the schema since it was read: read it again
        return table_id
    raise PipelineError(f"BigQuery table {table_id}: its schema kept changing while {what} was being loaded")


def _create_table(
    bq: Client,
    table_id: str,
    dataset: Dataset,
    catalogue: list[bigquery.SchemaField],
    incoming: Sequence[tuple[str, str, str]],
    month: dt.date | None,
) -> None:
    """The table with the catalogue's columns, then the file's others, described with the month that brought them."""
    names = {field.name.lower() for field in catalogue}
    brought = [(name, type_) for name, type_, _ in incoming if name.lower() not in names]
    note = added_by(dataset.name, month)
    table = bigquery.Table(table_id, schema=[*catalogue, *_nullable(brought, note)])
    if dataset is not ZONES:
        table.time_partitioning = bigquery.TimePartitioning(
            type_=bigquery.TimePartitioningType.MONTH, field=LINEAGE_COLUMN
        )
        table.clustering_fields = [dataset.pickup_column, "PULocationID"]
    bq.create_table(table, exists_ok=True, **bq.calls)


def _nullable(columns: Sequence[tuple[str, str]], note: str) -> list[bigquery.SchemaField]:
    return [bigquery.SchemaField(name, type_, mode="NULLABLE", description=note) for name, type_ in columns]


def _add_columns(bq: Client, table: bigquery.Table, columns: list[tuple[str, str]], note: str) -> None:
    """Add nullable columns to the table: a schema update (the table's etag must still match: another load's update
    in between is PreconditionFailed), then ALTER TABLE ... ADD COLUMN IF NOT EXISTS. On BigQuery that statement finds
    the columns there and does nothing; bqemulator's schema update changes what it answers about the table, not the
    DuckDB table under it, which the statement extends."""
    table.schema = [*table.schema, *_nullable(columns, note)]
    bq.update_table(table, ["schema"], **bq.calls)
    table_id = f"{table.project}.{table.dataset_id}.{table.table_id}"
    script = "".join(
        f"ALTER TABLE `{table_id}` ADD COLUMN IF NOT EXISTS `{name}` {type_};\n" for name, type_ in columns
    )
    job_id = f"luigi_tasks_{table.table_id}_{secrets.token_hex(4)}_columns"
    _run(bq, lambda jid: bq.query(script, job_id=jid, job_retry=None, **bq.calls), job_id)


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


def load_month(
    bq: Client,
    uri: str,
    *,
    bq_dataset: str,
    dataset: Dataset,
    month: dt.date,
    expected_rows: int,
    file_schema: pa.Schema,
) -> int:
    """Replace one month of the service's table with the Parquet at `uri`, whose schema is `file_schema` (the lake
    file's: its columns are loaded, the table's others are NULL in the month); returns the month's rows."""
    with api_errors(f"loading {dataset.name} {month:%Y-%m} into {bq.project}.{bq_dataset}"):
        return _replace_month(bq, uri, bq_dataset, dataset, month, expected_rows, file_schema)


def _replace_month(
    bq: Client,
    uri: str,
    bq_dataset: str,
    dataset: Dataset,
    month: dt.date,
    expected_rows: int,
    file_schema: pa.Schema,
) -> int:
    check_dataset(bq, bq_dataset)
    table_id = ensure_table(bq, bq_dataset, dataset, month, file_schema)
    loaded = file_fields(file_schema, f"{table_name(dataset)}:{month:%Y-%m}")
    _drop_stale_staging(bq, bq_dataset, f"_staging_{table_name(dataset)}_{month:%Y%m}_")
    attempt = secrets.token_hex(4)  # job ids: one per (table, month, attempt)
    job_prefix = f"luigi_tasks_{table_name(dataset)}_{month:%Y%m}_{attempt}"
    staging = _table_id(bq, bq_dataset, f"_staging_{table_name(dataset)}_{month:%Y%m}_{attempt}")
    # The staging table expires by itself: a run killed after the commit but before the drop below
    # leaves nothing behind for long (and the next load of the month drops it at once).
    staging_table = bigquery.Table(staging, schema=loaded)
    staging_table.expires = dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=1)
    bq.create_table(staging_table, **bq.calls)
    load_config = bigquery.LoadJobConfig(
        source_format=bigquery.SourceFormat.PARQUET,
        schema=loaded,
        write_disposition=bigquery.WriteDisposition.WRITE_TRUNCATE,
    )
    _run(bq, lambda job_id: bq.load_table_from_uri(uri, staging, job_config=load_config, job_id=job_id, **bq.calls),
         f"{job_prefix}_load")  # fmt: skip
    try:
        columns = ", ".join(f"`{field.name}`" for field in loaded)
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


def load_zones(bq: Client, uri: str, *, bq_dataset: str, file_schema: pa.Schema) -> int:
    """Replace the zones table with the lookup (its file's columns: `file_schema`): one load job with WRITE_TRUNCATE
    is atomic, and gives the table the file's schema."""
    with api_errors(f"loading the zone lookup into {bq.project}.{bq_dataset}"):
        return _replace_zones(bq, uri, bq_dataset, file_schema)


def _replace_zones(bq: Client, uri: str, bq_dataset: str, file_schema: pa.Schema) -> int:
    check_dataset(bq, bq_dataset)
    table_id = ensure_table(bq, bq_dataset, ZONES)
    config = bigquery.LoadJobConfig(
        source_format=bigquery.SourceFormat.PARQUET,
        schema=file_fields(file_schema, "zones"),
        write_disposition=bigquery.WriteDisposition.WRITE_TRUNCATE,
    )
    job_id = f"luigi_tasks_zones_{secrets.token_hex(4)}"
    _run(bq, lambda jid: bq.load_table_from_uri(uri, table_id, job_config=config, job_id=jid, **bq.calls), job_id)
    return bq.get_table(table_id, **bq.calls).num_rows


def zones_rows(bq: Client, bq_dataset: str) -> int:
    table_id = _table_id(bq, bq_dataset, "zones")
    with api_errors(f"reading {table_id}"):
        try:
            return bq.get_table(table_id, **bq.calls).num_rows or 0
        except gexc.NotFound:
            return 0


def external_table(
    bq: Client, bq_dataset: str, dataset: Dataset, source_uri: str, columns_added: dict[dt.date, dict[str, str]]
) -> bigquery.Table:
    """The definition of an external table over every month of a service in the lake bucket.

    The schema is explicit, never autodetected: the catalogue's, then the columns months added (month -> the
    manifest's columns_added), so the table reads all months without a type clash. Only real BigQuery runs
    external tables.
    """
    fields = [*schema(dataset, False), *_columns_of_months(dataset, columns_added)]
    table = bigquery.Table(_table_id(bq, bq_dataset, f"{table_name(dataset)}_external"), schema=fields)
    config = bigquery.ExternalConfig(bigquery.ExternalSourceFormat.PARQUET)
    config.source_uris = [source_uri]
    config.autodetect = False
    table.external_data_configuration = config
    return table


def _columns_of_months(dataset: Dataset, columns_added: dict[dt.date, dict[str, str]]) -> list[bigquery.SchemaField]:
    """The columns months added (name -> Arrow type), month by month (by name within one, as manifests list them),
    described with the first month that has each; one that two months type differently is an error naming both."""
    types = {str(arrow): type_ for arrow, type_ in _BQ_TYPES.items()}
    first: dict[str, tuple[str, str, dt.date]] = {}  # BigQuery's names match in any case
    table = f"{table_name(dataset)}_external"
    for month in sorted(columns_added):
        for name, arrow in columns_added[month].items():
            seen_name, seen_type, seen_month = first.setdefault(name.lower(), (name, arrow, month))
            if seen_type != arrow:
                raise DataError(
                    f"{table}: column {name} is {arrow} in {dataset.name} {month:%Y-%m}'s file, but {seen_type} in"
                    f" {dataset.name} {seen_month:%Y-%m}'s; an external table reads every month as one type:"
                    " nothing was changed"
                )
    return [
        bigquery.SchemaField(name, types[arrow], mode="NULLABLE", description=added_by(dataset.name, month))
        for name, arrow, month in first.values()
    ]


def external_table_is_current(bq: Client, definition: bigquery.Table) -> bool:
    """Whether the external table exists with every column of the definition."""
    try:
        existing = bq.get_table(definition.reference, **bq.calls)
    except gexc.NotFound:
        return False
    found = {(f.name.lower(), _standard_type(f.field_type)) for f in existing.schema}
    return all((f.name.lower(), f.field_type) in found for f in definition.schema)


def create_external_table(bq: Client, bq_dataset: str, definition: bigquery.Table) -> None:
    """Create the external table, or give an existing one the definition's columns it lacks (none is removed)."""
    check_dataset(bq, bq_dataset)
    try:
        bq.create_table(definition, **bq.calls)
        return
    except gexc.Conflict:
        existing = bq.get_table(definition.reference, **bq.calls)
    names = {f.name.lower() for f in existing.schema}
    existing.schema = [*existing.schema, *(f for f in definition.schema if f.name.lower() not in names)]
    bq.update_table(existing, ["schema"], **bq.calls)
