"""Load canonical Parquet into PostgreSQL: one table per service, one partition per month, swapped in whole.

A trip table is partitioned by its lineage column `source_month`. A month's rows are first copied, in
binary, into a staging table of their own over several connections at once (the server parses each
stream on its own core); then one transaction drops the month's old partition, if any, attaches the
staging table in its place and upserts the marker row. Readers see the old month or the new one, never
half of one, and a replaced month leaves no dead rows behind. A killed load leaves at most an unattached
staging table, which the month's next load drops. The COPY streams are encoded from Arrow batches by
pgpq, one Parquet batch at a time, so memory stays flat in the month's size.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import TypeVar
from urllib.parse import quote, quote_plus

import psycopg2
import psycopg2.errors
import psycopg2.extensions
import pyarrow as pa
import pyarrow.parquet as pq
from pgpq import ArrowToPostgresBinaryEncoder

from luigi_tasks.catalog import AMOUNT, CODE, LINEAGE_COLUMN, TEXT, TIME, ZONES, Dataset, packed_scalar, table_name
from luigi_tasks.errors import DataError, PipelineError
from luigi_tasks.parquet_stream import open_parquet
from luigi_tasks.sql import added_by, column_problems, columns_to_add, file_columns, is_ours, quote_ident

# Spelled as information_schema spells them (DDL takes these spellings too): a table's columns compare as they are.
_PG_TYPES = {CODE: "bigint", AMOUNT: "double precision", TIME: "timestamp without time zone", TEXT: "text"}
_COPY_READ_BYTES = 1 << 20
# Small batches keep the client's memory low (the encoder's buffers grow with the batch); the COPY
# stream is continuous either way.
_BATCH_ROWS = 16_384

RowProgress = Callable[[int, "int | None"], None]
ParquetSource = Path | pa.NativeFile  # a local file, or a lake file opened for random access
ParquetOpener = Callable[[], pa.NativeFile]  # opens the lake's file for random access, once per call
# A load takes its table locks in attempts this long: a reader queued behind one waits no longer.
LOCK_ATTEMPT_SECONDS = 1.0
_LOCK_PAUSE_SECONDS, _LOCK_PAUSE_MAX_SECONDS = 0.05, 1.0  # between attempts, doubling
_T = TypeVar("_T")
_STAGING = "_load_"  # a month's rows on their way in: {partition}_load_{random}, a table of its own
_UNPARSEABLE_DSN = (
    "[postgres] dsn is not a libpq URI or key=value string (libpq's reason is not shown: it may quote the password);"
    " expected e.g. host=H user=U password='a b' dbname=D, or a URI with its password percent-encoded"
)


_UNENCODED_AT = (
    "[postgres] dsn has an '@' in its user name or password that is not percent-encoded (libpq would read what"
    " follows it as the host name, and show it; the DSN is not shown): write the '@' as %40"
)
_URI = re.compile(r"^postgres(?:ql)?://([^/?#]*)", re.IGNORECASE)


def _check_uri_userinfo(dsn: str) -> None:
    """Refuse a URI whose user name or password has a bare '@' before libpq splits it at the wrong one."""
    uri = _URI.match(dsn.strip())
    if uri and uri[1].count("@") > 1:
        raise DataError(_UNENCODED_AT)


def update_id(dataset: Dataset, month: dt.date | None) -> str:
    """The marker's stable id, e.g. 'yellow_tripdata:2021-01' or 'zones'."""
    return table_name(dataset) if month is None else f"{table_name(dataset)}:{month:%Y-%m}"


def describe_dsn(dsn: str) -> str:
    """'user@host:port/dbname' for messages: never the password."""
    try:
        parts = psycopg2.extensions.parse_dsn(dsn) if dsn else {}
    except psycopg2.ProgrammingError:
        return "(an unparseable [postgres] dsn)"
    host = parts.get("host") or os.environ.get("PGHOST") or "local socket"
    if "@" in host:  # the tail of a password with a bare '@' (see _check_uri_userinfo)
        return "(a [postgres] dsn with an '@' in its user name or password: not shown)"
    port = parts.get("port") or os.environ.get("PGPORT") or "5432"
    user = parts.get("user") or os.environ.get("PGUSER") or ""
    dbname = parts.get("dbname") or os.environ.get("PGDATABASE") or user or ""
    return f"{user + '@' if user else ''}{host}:{port}/{dbname}"


# The password as written in a DSN: conninfo `password=...` (quoted or not), a URI's `?password=` or `user:password@`.
_WRITTEN_PASSWORD = re.compile(
    r"(?:^|\s)password\s*=\s*('(?:[^'\\]|\\.)*'|(?:\\.|[^\s\\])+)|[?&]password=([^&#]*)|^\w+://[^:@/]*:([^@/]*)@"
)


def _spellings(password: str) -> set[str]:
    """How a password may be written: as is, escaped for conninfo, percent-encoded (either hex case)."""
    encoded = {quote(password, safe=""), quote(password), quote_plus(password)}
    encoded |= {re.sub("%[0-9A-F]{2}", lambda m: m[0].lower(), e) for e in encoded}
    return {password, password.replace("\\", "\\\\").replace("'", "\\'"), *encoded}


def _secrets(dsn: str) -> list[str]:
    """Every spelling of the passwords in play (PGPASSWORD's, the DSN's), longest first so none is left in part."""
    passwords = {os.environ.get("PGPASSWORD", "")}
    with suppress(psycopg2.ProgrammingError):
        passwords.add(psycopg2.extensions.parse_dsn(dsn).get("password", "") if dsn else "")
    written = {group for match in _WRITTEN_PASSWORD.finditer(dsn) for group in match.groups() if group}
    found = {spelling for p in passwords if p for spelling in _spellings(p)} | written | {w.strip("'") for w in written}
    return sorted((s for s in found if s), key=len, reverse=True)


def _masked(text: str, dsn: str) -> str:
    for secret in _secrets(dsn):
        text = text.replace(secret, "****")
    return " ".join(text.split())


@contextmanager
def connection(dsn: str) -> Iterator[psycopg2.extensions.connection]:
    """A connection whose errors name the server, never the password; closed on exit."""
    _check_uri_userinfo(dsn)
    try:
        conn = psycopg2.connect(dsn, connect_timeout=10, application_name="luigi_tasks")
    except psycopg2.ProgrammingError:
        # libpq's reason quotes the DSN around the fault, and so maybe the password: it is not shown.
        raise DataError(_UNPARSEABLE_DSN) from None
    except psycopg2.OperationalError as exc:
        raise PipelineError(f"cannot connect to PostgreSQL at {describe_dsn(dsn)}: {_masked(str(exc), dsn)}") from None
    try:
        yield conn
    except psycopg2.Error as exc:
        with suppress(psycopg2.Error):  # the connection may be gone (server restarted): nothing to roll back
            conn.rollback()
        raise PipelineError(f"PostgreSQL at {describe_dsn(dsn)}: {_masked(str(exc), dsn)}") from None
    finally:
        conn.close()


def _expected_columns(dataset: Dataset, with_lineage: bool) -> list[tuple[str, str]]:
    columns = [(c.name, _PG_TYPES[c.type]) for c in dataset.columns]
    return [*columns, (LINEAGE_COLUMN, "date")] if with_lineage else columns


def _create_sql(table: str, dataset: Dataset, partitioned: bool) -> str:
    columns = ",\n  ".join(
        f"{quote_ident(name)} {type_}{' NOT NULL' if name == LINEAGE_COLUMN else ''}"
        for name, type_ in _expected_columns(dataset, partitioned)
    )
    partitioning = f" PARTITION BY LIST ({LINEAGE_COLUMN})" if partitioned else ""
    return f"CREATE TABLE IF NOT EXISTS {quote_ident(table)} (\n  {columns}\n){partitioning}"


def _table_columns(cur, table: str) -> list[tuple[str, str, str | None]]:
    """The table's (column, type, comment) list, [] when the current schema has no such table."""
    cur.execute(
        "SELECT c.column_name, c.data_type, d.description FROM information_schema.columns c"
        " JOIN pg_class r ON r.relname = c.table_name AND r.relnamespace = current_schema()::regnamespace"
        " LEFT JOIN pg_description d ON d.objoid = r.oid AND d.classoid = 'pg_class'::regclass"
        " AND d.objsubid = c.ordinal_position"
        " WHERE c.table_schema = current_schema() AND c.table_name = %s ORDER BY c.ordinal_position",
        (table,),
    )
    return cur.fetchall()


def _prepare_table(
    cur, table: str, dataset: Dataset, month: dt.date | None, incoming: list[tuple[str, str, str]]
) -> None:
    """Create the table from the catalogue unless it is there, and give it, as nullable columns, those of the
    catalogue and of the file (`incoming`: `file_columns`) it lacks, each commented with the month that added it.

    A table is extended only if it is ours, maybe from an earlier release with fewer columns (`is_ours`; a trip
    table also partitioned by its lineage column); another one is refused, with how it differs from the catalogue.
    """
    partitioned = month is not None
    expected = _expected_columns(dataset, partitioned)
    found = _table_columns(cur, table)
    if not found:
        cur.execute(_create_sql(table, dataset, partitioned))
        found = [(name, type_, None) for name, type_ in expected]
    else:
        pairs = [(name, type_) for name, type_, _ in found]
        required = [LINEAGE_COLUMN] if partitioned else [name for name, _ in expected]
        key = _partition_key(cur, table)
        partitioning = (
            [f"it is not partitioned by {LINEAGE_COLUMN}"] if partitioned and key != f"LIST ({LINEAGE_COLUMN})" else []
        )
        if partitioning or not is_ours(pairs, expected, required):
            raise DataError(
                f"table {table} does not match the {dataset.name} catalogue: "
                f"{'; '.join(column_problems(pairs, expected) + partitioning)}."
                " Nothing was changed: drop or rename the table, or load into another schema"
            )
    what, in_file = (update_id(dataset, month), "this month's file") if partitioned else ("zones", "the lookup's file")
    added = columns_to_add(found, expected, incoming, what=what, table=table, in_file=in_file)
    if not added:
        return  # no ALTER when nothing is missing: it would lock the table against every reader
    columns = ", ".join(f"ADD COLUMN IF NOT EXISTS {quote_ident(name)} {type_}" for name, type_ in added)
    cur.execute(f"ALTER TABLE {quote_ident(table)} {columns}")
    for name, _ in added:
        cur.execute(
            f"COMMENT ON COLUMN {quote_ident(table)}.{quote_ident(name)} IS %s", (added_by(dataset.name, month),)
        )


def _lock(cur, key: str) -> None:
    """Take a transaction-level advisory lock on `key`: other loaders wait for this transaction's end."""
    cur.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (key,))


def _in_lock_attempts(cur, lock_timeout: float, what: str, table: str, work: Callable[[], _T]) -> _T:
    """Run `work` (statements that take table locks) in attempts of at most LOCK_ATTEMPT_SECONDS each, until
    `lock_timeout` seconds (0: no limit) are spent; then fail in one line, the attempt rolled back.

    While a load waits for a lock that a long reader holds, every later query of the table queues behind it. Each
    attempt gives up its place in the queue, so a reader waits at most one attempt, never the whole lock_timeout.
    Advisory locks are taken before this: loads of one month still take turns unbounded.
    """
    deadline = time.monotonic() + lock_timeout if lock_timeout else None
    pause = _LOCK_PAUSE_SECONDS
    while True:
        left = LOCK_ATTEMPT_SECONDS if deadline is None else deadline - time.monotonic()
        cur.execute("SAVEPOINT lock_attempt")
        cur.execute(
            "SELECT set_config('lock_timeout', %s, true)",
            (f"{max(1, round(min(LOCK_ATTEMPT_SECONDS, left) * 1000))}ms",),
        )
        try:
            done = work()
        except psycopg2.errors.LockNotAvailable:
            cur.execute("ROLLBACK TO SAVEPOINT lock_attempt")
            if deadline is not None and time.monotonic() + pause >= deadline:
                raise PipelineError(
                    f"{what}: another session held a lock on {table} for more than [postgres] lock_timeout ="
                    f" {lock_timeout:g} seconds (a long query or an open transaction); nothing was loaded"
                ) from None
            time.sleep(pause)  # the queue behind the attempt drains meanwhile
            pause = min(pause * 2, _LOCK_PAUSE_MAX_SECONDS)
            continue
        cur.execute("RELEASE SAVEPOINT lock_attempt")
        return done


def ensure_marker_table(cur, marker_table: str) -> None:
    """Create the marker table once, even when several loaders start on an empty database at once, and give an
    older one its lake_file column."""
    cur.execute(
        "SELECT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = to_regclass(%s) AND attname = 'lake_file'"
        " AND NOT attisdropped)",
        (quote_ident(marker_table),),
    )
    if cur.fetchone()[0]:
        _check_marker_key(cur, marker_table)
        return  # no ALTER when the column is there: it would lock the table against every reader
    _lock(cur, marker_table)
    cur.execute("SAVEPOINT create_marker_table")
    try:
        # The shape of luigi's PostgresTarget marker table (plus a nullable column), so both can share it.
        cur.execute(
            f"CREATE TABLE IF NOT EXISTS {quote_ident(marker_table)} ("
            " update_id TEXT PRIMARY KEY, target_table TEXT, inserted TIMESTAMP DEFAULT NOW())"
        )
    except psycopg2.errors.UniqueViolation:
        # A client outside our lock (luigi's PostgresTarget) created it meanwhile: the table is there now.
        cur.execute("ROLLBACK TO SAVEPOINT create_marker_table")
    else:
        cur.execute("RELEASE SAVEPOINT create_marker_table")
    # The lake file a month was loaded from: a month redone in the lake is then no longer done here.
    cur.execute(f"ALTER TABLE {quote_ident(marker_table)} ADD COLUMN IF NOT EXISTS lake_file TEXT")
    _check_marker_key(cur, marker_table)


def _check_marker_key(cur, marker_table: str) -> None:
    """A marker table of someone else's making may lack the key that recording a month once relies on."""
    cur.execute(
        "SELECT EXISTS (SELECT 1 FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid"
        " AND a.attnum = i.indkey[0] WHERE i.indrelid = to_regclass(%s) AND i.indisunique AND i.indnkeyatts = 1"
        " AND i.indpred IS NULL AND a.attname = 'update_id')",
        (quote_ident(marker_table),),
    )
    if not cur.fetchone()[0]:
        raise DataError(
            f"[postgres] marker_table {marker_table} has no primary key on update_id, which a load needs to record"
            f" its month once: add it with ALTER TABLE {marker_table} ADD PRIMARY KEY (update_id),"
            " or set another [postgres] marker_table; nothing was loaded"
        )


def _partition_name(table: str, month: dt.date) -> str:
    return f"{table}_{month:%Y_%m}"


def prepare_service_table(
    conn, dataset: Dataset, month: dt.date, marker_table: str, lock_timeout: float, *, file_schema: pa.Schema
) -> str:
    """Create (once) the service table and the marker table, add the columns the month's file brings (its schema:
    `file_schema`); commit; return the month's partition name.

    DDL runs in its own short transaction under an advisory lock, so concurrent workers do not race. A table of
    the partition's name that is not the month's partition is refused here, before any rows are sent.
    """
    table = table_name(dataset)
    partition = _partition_name(table, month)
    incoming = file_columns(file_schema, _PG_TYPES, update_id(dataset, month))
    with conn.cursor() as cur:
        _lock(cur, table)

        def prepare() -> None:
            _prepare_table(cur, table, dataset, month, incoming)
            if _relkind(cur, partition) is not None:
                _check_attached(cur, table, partition)
            ensure_marker_table(cur, marker_table)

        _in_lock_attempts(cur, lock_timeout, update_id(dataset, month), table, prepare)
    conn.commit()
    return partition


def _relkind(cur, name: str) -> str | None:
    """The kind of the current schema's relation `name` ('r' table, 'p' partitioned table...), None if there is none,
    as of this statement.

    Read from pg_class with SQL, not with to_regclass(): that looks in the session's catalog cache, which may still
    say "no such table" about one that another loader created and committed while this one waited for a lock.
    """
    return _pg_class(cur, name, "relkind")


def _partition_key(cur, table: str) -> str | None:
    """How the table is partitioned ('LIST (source_month)'), None when it is not (or there is no such table)."""
    return _pg_class(cur, table, "pg_get_partkeydef(oid)")


def _pg_class(cur, name: str, what: str) -> str | None:
    cur.execute(
        f"SELECT {what} FROM pg_class WHERE relname = %s AND relnamespace = current_schema()::regnamespace", (name,)
    )
    found = cur.fetchone()
    return found[0] if found else None


def _check_attached(cur, table: str, partition: str) -> None:
    """A table of the partition's name that is not the month's partition (detached, or made by hand) would take
    the month's rows where no query of the table sees them: refuse it."""
    cur.execute(
        "SELECT EXISTS (SELECT 1 FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
        " JOIN pg_class p ON p.oid = i.inhparent WHERE c.relname = %s AND p.relname = %s"
        " AND c.relnamespace = current_schema()::regnamespace AND p.relnamespace = c.relnamespace)",
        (partition, table),
    )
    if not cur.fetchone()[0]:
        raise DataError(
            f"table {partition} exists but is not a partition of {table} (detached?): attach it with "
            f"ALTER TABLE {table} ATTACH PARTITION {partition} FOR VALUES IN (...), or drop it; nothing was loaded"
        )


class _ByteStream:
    """A read()-able file over an iterator of byte chunks, for psycopg2's copy_expert (no copying beyond slices)."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._chunks = iter(chunks)
        self._chunk = b""
        self._offset = 0

    def read(self, size: int = -1) -> bytes:
        while self._offset >= len(self._chunk):
            following = next(self._chunks, None)
            if following is None:
                return b""
            self._chunk, self._offset = following, 0
        end = len(self._chunk) if size < 0 else self._offset + size
        out = self._chunk[self._offset : end]
        self._offset += len(out)
        return out


def _binary_copy_chunks(
    parquet: ParquetSource,
    lineage: dt.date | None,
    progress: RowProgress | None,
    counter: list[int],
    row_groups: list[int] | None = None,
) -> Iterator[bytes]:
    source = open_parquet(parquet)
    schema = source.schema_arrow
    if lineage is not None:
        schema = schema.append(pa.field(LINEAGE_COLUMN, pa.date32()))
    encoder = ArrowToPostgresBinaryEncoder(schema)
    total = source.metadata.num_rows
    months = None
    if lineage is not None:
        # One constant column, built from days since the epoch rather than a list of Python dates.
        day = packed_scalar(pa.date32(), "<i", (lineage - dt.date(1970, 1, 1)).days)
        months = pa.nulls(_BATCH_ROWS, pa.date32()).fill_null(day)
    yield encoder.write_header()
    for batch in source.iter_batches(batch_size=_BATCH_ROWS, row_groups=row_groups):
        if months is not None:
            batch = pa.RecordBatch.from_arrays([*batch.columns, months.slice(0, batch.num_rows)], schema=schema)
        yield encoder.write_batch(batch)
        counter[0] += batch.num_rows
        if progress:
            progress(counter[0], total)
    yield encoder.finish()


def _copy(
    cur,
    target: str,
    columns: list[str],
    parquet: ParquetSource,
    lineage: dt.date | None,
    progress: RowProgress | None,
    counter: list[int] | None = None,
    row_groups: list[int] | None = None,
) -> int:
    counter = [0] if counter is None else counter
    column_list = ", ".join(quote_ident(c) for c in columns)
    stream = _ByteStream(_binary_copy_chunks(parquet, lineage, progress, counter, row_groups))
    cur.copy_expert(
        f"COPY {quote_ident(target)} ({column_list}) FROM STDIN WITH (FORMAT binary)", stream, _COPY_READ_BYTES
    )
    return counter[0]


def _opened(parquet: Path | ParquetOpener) -> pa.NativeFile:
    return parquet() if callable(parquet) else pa.OSFile(str(parquet))


def _copy_in_streams(
    dsn: str,
    target: str,
    columns: list[str],
    parquet: Path | ParquetOpener,
    lineage: dt.date,
    progress: RowProgress | None,
    streams: int,
) -> int:
    """COPY the Parquet into `target` over `streams` connections at once, each sending every streams-th row group
    and committing on its own; returns the rows sent. The server then parses on as many cores as there are streams.
    """
    with _opened(parquet) as file:
        row_groups = pq.ParquetFile(file).num_row_groups
    shares = [list(range(first, row_groups, streams)) for first in range(max(1, min(streams, row_groups)))]
    counters = [[0] for _ in shares]
    errors: list[BaseException] = []

    def total_progress(_: int, total: int | None) -> None:
        progress(sum(counter[0] for counter in counters), total)

    def send(index: int) -> None:
        try:
            with connection(dsn) as conn, conn.cursor() as cur, _opened(parquet) as file:
                report = total_progress if progress and index == 0 else None
                _copy(cur, target, columns, file, lineage, report, counters[index], shares[index])
                conn.commit()
        except BaseException as exc:  # re-raised in the caller's thread below
            errors.append(exc)

    others = [threading.Thread(target=send, args=(index,), daemon=True) for index in range(1, len(shares))]
    for thread in others:
        thread.start()
    send(0)
    for thread in others:
        thread.join()
    if errors:
        raise errors[0]
    return sum(counter[0] for counter in counters)


def _staging_tables(cur, partition: str) -> list[str]:
    cur.execute(
        "SELECT relname FROM pg_class WHERE relnamespace = current_schema()::regnamespace AND relkind = 'r'"
        " AND starts_with(relname, %s)",
        (partition + _STAGING,),
    )
    return [row[0] for row in cur.fetchall()]


def _drop_abandoned_staging(cur, partition: str) -> None:
    """Drop the month's staging tables whose loader is gone: a live loader holds its table's session lock."""
    for name in _staging_tables(cur, partition):
        cur.execute("SELECT pg_try_advisory_lock(hashtext(%s))", (name,))
        if cur.fetchone()[0]:
            cur.execute(f"DROP TABLE IF EXISTS {quote_ident(name)}")
            cur.execute("SELECT pg_advisory_unlock(hashtext(%s))", (name,))


def _mark(cur, marker_table: str, update: str, table: str, lake_file: str | None) -> None:
    cur.execute(
        f"INSERT INTO {quote_ident(marker_table)} (update_id, target_table, lake_file) VALUES (%s, %s, %s)"
        " ON CONFLICT (update_id) DO UPDATE SET target_table = EXCLUDED.target_table, inserted = NOW(),"
        " lake_file = EXCLUDED.lake_file",
        (update, table, lake_file),
    )


def load_month(
    dsn: str,
    parquet: Path | ParquetOpener,
    *,
    dataset: Dataset,
    month: dt.date,
    marker_table: str,
    lake_file: str | None = None,
    lock_timeout: float = 60.0,
    progress: RowProgress | None = None,
    streams: int = 2,
) -> int:
    """Replace one month of a service's table with the canonical Parquet's rows; returns the row count.

    `parquet` is a local file, or a function that opens the lake's file (each stream opens its own).
    `lake_file` (the lake file's fingerprint) is recorded in the marker: the month is done only for that file.
    """
    with _opened(parquet) as file:
        source = pq.ParquetFile(file)
        expected_rows, file_schema = source.metadata.num_rows, source.schema_arrow
    table = table_name(dataset)
    update = update_id(dataset, month)
    columns = [*file_schema.names, LINEAGE_COLUMN]  # the file's own: the table's others are NULL in this month
    with connection(dsn) as conn:
        partition = prepare_service_table(conn, dataset, month, marker_table, lock_timeout, file_schema=file_schema)
        staging = f"{partition}{_STAGING}{secrets.token_hex(4)}"
        with conn.cursor() as cur:
            # Held for this session's life: a staging table whose lock is free belongs to a load that died.
            cur.execute("SELECT pg_advisory_lock(hashtext(%s))", (staging,))
            _drop_abandoned_staging(cur, partition)
            # The CHECK lets ATTACH PARTITION trust the rows without scanning them.
            cur.execute(
                f"CREATE TABLE {quote_ident(staging)} (LIKE {quote_ident(table)},"
                f" CONSTRAINT {quote_ident(staging + '_month')} CHECK ({LINEAGE_COLUMN} = %s))",
                (month,),
            )
        conn.commit()
        try:
            copied = _copy_in_streams(dsn, staging, columns, parquet, month, progress, streams)
            if copied != expected_rows:
                raise PipelineError(f"{update}: copied {copied:,} rows, expected {expected_rows:,}")
            _swap_in(conn, table, partition, staging, month, lock_timeout, update, marker_table, lake_file)
        except BaseException:
            with suppress(psycopg2.Error):
                conn.rollback()
                with conn.cursor() as cur:
                    cur.execute(f"DROP TABLE IF EXISTS {quote_ident(staging)}")
                conn.commit()
            raise
    return copied


def _swap_in(
    conn,
    table: str,
    partition: str,
    staging: str,
    month: dt.date,
    lock_timeout: float,
    update: str,
    marker_table: str,
    lake_file: str | None,
) -> None:
    """In one transaction: the month's old partition out, the loaded staging table in as the partition, the marker.

    Loads of one month take turns here: each replaces what the one before it committed, so the month is there once.
    A new month's ATTACH does not wait for readers of the table; replacing a month does (dropping a partition
    needs the table to itself), at most `lock_timeout` seconds. Columns another month's load added to the table
    since the staging table was made are added to it first, NULL: a partition has its table's columns.
    """
    with conn.cursor() as cur:
        _lock(cur, update)
        replacing = _relkind(cur, partition) is not None

        def swap() -> None:
            # The lock ATTACH takes, taken first: no load adds a column to the table between here and the ATTACH.
            cur.execute(f"LOCK TABLE ONLY {quote_ident(table)} IN SHARE UPDATE EXCLUSIVE MODE")
            _add_missing_columns(cur, table, staging)
            if replacing:
                _check_attached(cur, table, partition)
                cur.execute(f"DROP TABLE {quote_ident(partition)}")
            cur.execute(f"ALTER TABLE {quote_ident(staging)} RENAME TO {quote_ident(partition)}")
            cur.execute(
                f"ALTER TABLE {quote_ident(table)} ATTACH PARTITION {quote_ident(partition)} FOR VALUES IN (%s)",
                (month,),
            )
            cur.execute(f"ALTER TABLE {quote_ident(partition)} DROP CONSTRAINT {quote_ident(staging + '_month')}")
            _mark(cur, marker_table, update, table, lake_file)

        _in_lock_attempts(cur, lock_timeout, update, partition if replacing else table, swap)
    conn.commit()


def _add_missing_columns(cur, table: str, staging: str) -> None:
    """Give the staging table the columns of `table` it lacks, with their types (no rows change: they are NULL)."""
    cur.execute(
        "SELECT a.attname, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a"
        " JOIN pg_class r ON r.oid = a.attrelid WHERE r.relname = %s"
        " AND r.relnamespace = current_schema()::regnamespace AND a.attnum > 0 AND NOT a.attisdropped"
        " AND a.attname NOT IN (SELECT s.attname FROM pg_attribute s JOIN pg_class t"
        " ON t.oid = s.attrelid WHERE t.relname = %s AND t.relnamespace = r.relnamespace AND s.attnum > 0"
        " AND NOT s.attisdropped) ORDER BY a.attnum",
        (table, staging),
    )
    missing = cur.fetchall()
    if missing:
        columns = ", ".join(f"ADD COLUMN {quote_ident(name)} {type_}" for name, type_ in missing)
        cur.execute(f"ALTER TABLE {quote_ident(staging)} {columns}")


def load_zones(
    dsn: str, parquet: ParquetSource, *, marker_table: str, lake_file: str | None = None, lock_timeout: float = 60.0
) -> int:
    """Replace the zones table with the lookup's rows (the file's columns), in one transaction."""
    file_schema = pq.read_schema(parquet)
    incoming = file_columns(file_schema, _PG_TYPES, "zones")
    with connection(dsn) as conn:
        with conn.cursor() as cur:
            _lock(cur, "zones")  # held to the commit: concurrent loads of the zones take turns

            def replace() -> int:
                _prepare_table(cur, "zones", ZONES, None, incoming)
                ensure_marker_table(cur, marker_table)
                cur.execute("DELETE FROM zones")
                copied = _copy(cur, "zones", file_schema.names, parquet, None, None)
                _mark(cur, marker_table, update_id(ZONES, None), "zones", lake_file)
                return copied

            copied = _in_lock_attempts(cur, lock_timeout, "zones", "zones", replace)
        conn.commit()
    return copied


def done_updates(dsn: str, marker_table: str, update_ids: list[str]) -> set[str]:
    """Which of these updates are marked done: one query, whatever the number of ids."""
    with connection(dsn) as conn, conn.cursor() as cur:
        conn.autocommit = True  # a read: no BEGIN, one round trip
        try:
            cur.execute(
                f"SELECT update_id FROM {quote_ident(marker_table)} WHERE update_id = ANY(%s)", (list(update_ids),)
            )
        except psycopg2.errors.UndefinedTable:
            return set()  # nothing was ever loaded here
        return {row[0] for row in cur.fetchall()}


def loaded_months(
    dsn: str, marker_table: str, dataset: Dataset, lake_files: dict[dt.date | None, str]
) -> set[dt.date | None]:
    """Months (month -> the lake file's fingerprint) marked done from that very lake file whose rows are still
    there: the month's partition attached to the service's table (the zones table, for None). One query; a
    dropped table, a detached partition or a month redone in the lake since is not loaded. A fingerprint of None
    asks whether the month is loaded from any lake file."""
    ids = {update_id(dataset, month): month for month in lake_files}
    table = table_name(dataset) if dataset is not ZONES else "zones"
    holders = [quote_ident(table if month is None else _partition_name(table, month)) for month in ids.values()]
    with connection(dsn) as conn, conn.cursor() as cur:
        conn.autocommit = True  # a read: no BEGIN, one round trip
        try:
            cur.execute(
                f"SELECT u.id FROM unnest(%s::text[], %s::text[], %s::text[]) AS u(id, holder, lake_file)"
                f" JOIN {quote_ident(marker_table)} m ON m.update_id = u.id"
                " WHERE (u.lake_file IS NULL OR m.lake_file = u.lake_file) AND to_regclass(u.holder) IS NOT NULL"
                "  AND (to_regclass(u.holder) = to_regclass(%s)"
                "  OR EXISTS (SELECT 1 FROM pg_inherits i"
                "   WHERE i.inhrelid = to_regclass(u.holder) AND i.inhparent = to_regclass(%s)))",
                (list(ids), holders, list(lake_files.values()), quote_ident(table), quote_ident(table)),
            )
        except (psycopg2.errors.UndefinedTable, psycopg2.errors.UndefinedColumn):
            return set()  # nothing was ever loaded here, or only before lake files were recorded
        return {ids[row[0]] for row in cur.fetchall()}
