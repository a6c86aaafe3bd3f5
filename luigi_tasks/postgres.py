"""Load canonical Parquet into PostgreSQL: one table per service, one transaction per month.

A trip table is partitioned by its lineage column `source_month`, one partition per month. A month
is replaced in one transaction: DELETE the partition's rows, COPY the month in binary, upsert its
marker row, commit. Readers keep seeing the old month (MVCC) until the commit and never half of one;
a killed load rolls back and leaves no marker. The binary COPY stream is encoded from Arrow batches
by pgpq, one Parquet batch at a time, so memory stays flat in the month's size.
"""

from __future__ import annotations

import datetime as dt
import os
import re
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from urllib.parse import quote, quote_plus

import psycopg2
import psycopg2.errors
import psycopg2.extensions
import pyarrow as pa
import pyarrow.parquet as pq
from pgpq import ArrowToPostgresBinaryEncoder

from luigi_tasks.catalog import AMOUNT, CODE, LINEAGE_COLUMN, TEXT, TIME, ZONES, Dataset, table_name
from luigi_tasks.errors import DataError, PipelineError

_PG_TYPES = {CODE: "bigint", AMOUNT: "double precision", TIME: "timestamp", TEXT: "text"}
# information_schema spells some types differently from DDL.
_INFORMATION_SCHEMA_TYPES = {"timestamp": "timestamp without time zone"}
_COPY_READ_BYTES = 1 << 20
# Small batches keep the client's memory low (the encoder's buffers grow with the batch); the COPY
# stream is continuous either way.
_BATCH_ROWS = 16_384
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")

RowProgress = Callable[[int, "int | None"], None]
ParquetSource = Path | pa.NativeFile  # a local file, or a lake file opened for random access
_UNPARSEABLE_DSN = (
    "[postgres] dsn is not a libpq URI or key=value string (libpq's reason is not shown: it may quote the password);"
    " expected e.g. host=H user=U password='a b' dbname=D, or a URI with its password percent-encoded"
)


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def checked_identifier(name: str, what: str) -> str:
    """Table and schema names come from config: allow plain identifiers only."""
    if not _IDENTIFIER.match(name):
        raise DataError(f"{what} {name!r} is not a plain SQL identifier (letters, digits, _; at most 63)")
    return name


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


def _check_table(cur, table: str, dataset: Dataset, partitioned: bool) -> bool:
    """True if the table exists and matches the catalogue; False if it does not exist; else an error."""
    cur.execute(
        "SELECT column_name, data_type FROM information_schema.columns"
        " WHERE table_schema = current_schema() AND table_name = %s ORDER BY ordinal_position",
        (table,),
    )
    found = cur.fetchall()
    if not found:
        return False
    expected = [(n, _INFORMATION_SCHEMA_TYPES.get(t, t)) for n, t in _expected_columns(dataset, partitioned)]
    problems = []
    found_types, expected_types = dict(found), dict(expected)
    missing = [n for n, _ in expected if n not in found_types]
    extra = [n for n, _ in found if n not in expected_types]
    if missing:
        problems.append("missing " + ", ".join(missing))
    if extra:
        problems.append("unexpected " + ", ".join(extra))
    problems += [
        f"{n} is {found_types[n]}, expected {t}" for n, t in expected if n in found_types and found_types[n] != t
    ]
    if not problems and partitioned:
        cur.execute("SELECT relkind FROM pg_class WHERE oid = to_regclass(%s)", (quote_ident(table),))
        if cur.fetchone()[0] != "p":
            problems.append(f"it is not partitioned by {LINEAGE_COLUMN}")
    if problems:
        raise DataError(
            f"table {table} does not match the {dataset.name} catalogue: {'; '.join(problems)}."
            " Nothing was changed: drop or rename the table, or load into another schema"
        )
    return True


def _lock(cur, key: str) -> None:
    """Take a transaction-level advisory lock on `key`: other loaders wait for this transaction's end."""
    cur.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (key,))


@contextmanager
def _bounded_lock_wait(cur, lock_timeout: float, what: str, table: str) -> Iterator[None]:
    """Wait at most `lock_timeout` seconds (0: no limit) for each table lock to the end of the transaction.

    A load waiting for a lock that a long reader holds makes every later query of the table queue behind it;
    giving up frees them. Advisory locks are taken before this: loads of one month still take turns unbounded.
    """
    cur.execute("SELECT set_config('lock_timeout', %s, true)", (f"{round(lock_timeout * 1000)}ms",))
    try:
        yield
    except psycopg2.errors.LockNotAvailable:
        raise PipelineError(
            f"{what}: another session held a lock on {table} for more than [postgres] lock_timeout = {lock_timeout:g}"
            " seconds (a long query or an open transaction); nothing was loaded"
        ) from None


def ensure_marker_table(cur, marker_table: str) -> None:
    """Create the marker table once, even when several loaders start on an empty database at once, and give an
    older one its lake_file column."""
    cur.execute(
        "SELECT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = to_regclass(%s) AND attname = 'lake_file'"
        " AND NOT attisdropped)",
        (quote_ident(marker_table),),
    )
    if cur.fetchone()[0]:
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


def _partition_name(table: str, month: dt.date) -> str:
    return f"{table}_{month:%Y_%m}"


def prepare_month_table(conn, dataset: Dataset, month: dt.date, marker_table: str, lock_timeout: float) -> str:
    """Create (once) the service table, the month's partition and the marker table; commit; return the partition.

    DDL runs in its own short transaction under an advisory lock, so concurrent workers do not race.
    """
    table = table_name(dataset)
    partition = _partition_name(table, month)
    with conn.cursor() as cur:
        _lock(cur, table)
        with _bounded_lock_wait(cur, lock_timeout, update_id(dataset, month), table):
            if not _check_table(cur, table, dataset, partitioned=True):
                cur.execute(_create_sql(table, dataset, partitioned=True))
            cur.execute(
                f"CREATE TABLE IF NOT EXISTS {quote_ident(partition)} PARTITION OF {quote_ident(table)}"
                " FOR VALUES IN (%s)",
                (month,),
            )
            _check_attached(cur, table, partition)
            ensure_marker_table(cur, marker_table)
    conn.commit()
    return partition


def _check_attached(cur, table: str, partition: str) -> None:
    """A table of the partition's name that is not the month's partition (detached, or made by hand) would take
    the month's rows where no query of the table sees them: refuse it."""
    cur.execute(
        "SELECT EXISTS (SELECT 1 FROM pg_inherits WHERE inhrelid = to_regclass(%s) AND inhparent = to_regclass(%s))",
        (quote_ident(partition), quote_ident(table)),
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
    parquet: ParquetSource, lineage: dt.date | None, progress: RowProgress | None, counter: list[int]
) -> Iterator[bytes]:
    source = pq.ParquetFile(parquet)
    schema = source.schema_arrow
    if lineage is not None:
        schema = schema.append(pa.field(LINEAGE_COLUMN, pa.date32()))
    encoder = ArrowToPostgresBinaryEncoder(schema)
    total = source.metadata.num_rows
    months = None
    if lineage is not None:
        # One constant column, built from days since the epoch rather than a list of Python dates.
        day = pa.scalar((lineage - dt.date(1970, 1, 1)).days, pa.int32()).cast(pa.date32())
        months = pa.nulls(_BATCH_ROWS, pa.date32()).fill_null(day)
    yield encoder.write_header()
    for batch in source.iter_batches(batch_size=_BATCH_ROWS):
        if months is not None:
            batch = pa.RecordBatch.from_arrays([*batch.columns, months.slice(0, batch.num_rows)], schema=schema)
        yield encoder.write_batch(batch)
        counter[0] += batch.num_rows
        if progress:
            progress(counter[0], total)
    yield encoder.finish()


def _copy(cur, target: str, columns: list[str], parquet: ParquetSource, lineage, progress) -> int:
    counter = [0]
    column_list = ", ".join(quote_ident(c) for c in columns)
    stream = _ByteStream(_binary_copy_chunks(parquet, lineage, progress, counter))
    cur.copy_expert(
        f"COPY {quote_ident(target)} ({column_list}) FROM STDIN WITH (FORMAT binary)", stream, _COPY_READ_BYTES
    )
    return counter[0]


def _mark(cur, marker_table: str, update: str, table: str, lake_file: str | None) -> None:
    cur.execute(
        f"INSERT INTO {quote_ident(marker_table)} (update_id, target_table, lake_file) VALUES (%s, %s, %s)"
        " ON CONFLICT (update_id) DO UPDATE SET target_table = EXCLUDED.target_table, inserted = NOW(),"
        " lake_file = EXCLUDED.lake_file",
        (update, table, lake_file),
    )


def load_month(
    dsn: str,
    parquet: ParquetSource,
    *,
    dataset: Dataset,
    month: dt.date,
    marker_table: str,
    lake_file: str | None = None,
    lock_timeout: float = 60.0,
    progress: RowProgress | None = None,
) -> int:
    """Replace one month of a service's table with the canonical Parquet's rows; returns the row count.

    `lake_file` (the lake file's fingerprint) is recorded in the marker: the month is done only for that file.
    """
    expected_rows = pq.read_metadata(parquet).num_rows
    with connection(dsn) as conn:
        partition = prepare_month_table(conn, dataset, month, marker_table, lock_timeout)
        update = update_id(dataset, month)
        with conn.cursor() as cur:
            # Loads of one month take turns until commit: the second deletes what the first committed
            # (its DELETE runs after the wait, so it sees those rows) instead of adding the month again.
            _lock(cur, update)
            with _bounded_lock_wait(cur, lock_timeout, update, partition):
                cur.execute(f"DELETE FROM {quote_ident(partition)}")
                columns = [name for name, _ in _expected_columns(dataset, with_lineage=True)]
                copied = _copy(cur, partition, columns, parquet, month, progress)
                if copied != expected_rows:
                    raise PipelineError(f"{update}: copied {copied:,} rows, expected {expected_rows:,}")
                _mark(cur, marker_table, update, table_name(dataset), lake_file)
        conn.commit()
    return copied


def load_zones(
    dsn: str, parquet: ParquetSource, *, marker_table: str, lake_file: str | None = None, lock_timeout: float = 60.0
) -> int:
    """Replace the zones table with the lookup's rows, in one transaction."""
    with connection(dsn) as conn:
        with conn.cursor() as cur:
            _lock(cur, "zones")  # held to the commit: concurrent loads of the zones take turns
            with _bounded_lock_wait(cur, lock_timeout, "zones", "zones"):
                if not _check_table(cur, "zones", ZONES, partitioned=False):
                    cur.execute(_create_sql("zones", ZONES, partitioned=False))
                ensure_marker_table(cur, marker_table)
                cur.execute("DELETE FROM zones")
                copied = _copy(cur, "zones", [c.name for c in ZONES.columns], parquet, None, None)
                _mark(cur, marker_table, update_id(ZONES, None), "zones", lake_file)
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
