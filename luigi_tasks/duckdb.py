"""Load canonical Parquet into a DuckDB file: one table per service, one transaction per month.

A month is replaced in one transaction: DELETE the month's rows (by `source_month`), INSERT the file's rows,
replace its marker row (the lake file's fingerprint and the row count), COMMIT. A killed load leaves the file
as it was: DuckDB drops an uncommitted transaction when it opens the file again.

DuckDB lets one process at a time open a file for writing, and while it does, no other process may open it
at all, not even to read. Loads and "done?" checks therefore open the file briefly, and wait up to
[duckdb] lock_wait seconds while another process (a duckdb CLI, a notebook, a second luigi run) holds it.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.parquet as pq

from luigi_tasks.catalog import AMOUNT, CODE, LINEAGE_COLUMN, TEXT, TIME, Dataset
from luigi_tasks.errors import DataError, PipelineError
from luigi_tasks.parquet_stream import open_parquet
from luigi_tasks.sql import (
    added_by,
    column_problems,
    columns_to_add,
    file_columns,
    is_ours,
    quote_ident,
    quote_literal,
)

if TYPE_CHECKING:
    import duckdb

_DUCKDB_TYPES = {CODE: "BIGINT", AMOUNT: "DOUBLE", TIME: "TIMESTAMP", TEXT: "VARCHAR"}
_SETTINGS = {
    # Nothing is downloaded at run time: reading Parquet and Arrow is built in.
    "autoinstall_known_extensions": False,
    "autoload_known_extensions": False,
    # A table's rows have no order: inserting them as the threads finish halves a month's load time.
    "preserve_insertion_order": False,
}
_LOCKED = "Could not set lock on file"
_HOLDER = re.compile(r"Conflicting lock is held in (.+?) \(PID (\d+)\)")
_RETRY_S = 0.2
_BATCH_ROWS = 131_072

# Our zones table's name until [duckdb] zones_table moved out of the course's way: its dbt project seeds a
# taxi_zone_lookup of its own into the target's schema, prod under `--target prod`.
FORMER_ZONES_TABLE = "taxi_zone_lookup"

# The database the course's dbt sources name; DuckDB names a file's database after its name up to the first dot.
COURSE_DATABASE = "taxi_rides_ny"

log = logging.getLogger(__name__)

RowProgress = Callable[[int, "int | None"], None]
ParquetSource = Path | pa.NativeFile  # a local file, or a lake file opened for random access


@dataclass(frozen=True)
class Warehouse:
    """The DuckDB file, the schema of its tables and its marker table, and how long to wait for the file."""

    path: Path
    schema: str
    marker_table: str
    lock_wait: float = 60.0
    # Bounds of a load's memory ([duckdb] memory_limit, threads, temp_directory); 0 and "": DuckDB's defaults.
    memory_limit: str = "512MB"
    threads: int = 0
    temp_directory: str = ""

    def settings(self) -> dict[str, object]:
        """The connection's settings: ours, and the memory bounds."""
        bounds: dict[str, object] = {"memory_limit": self.memory_limit}
        if self.threads:
            bounds["threads"] = self.threads
        if self.temp_directory:
            bounds["temp_directory"] = str(Path(self.temp_directory).expanduser())
        return {**_SETTINGS, **bounds}

    def qualified(self, table: str) -> str:
        return f"{quote_ident(self.schema)}.{quote_ident(table)}"


def course_name_problem(path: Path) -> str | None:
    """Why the course's dbt sources cannot find this file's tables (its name), or None when they can."""
    database = path.name.split(".")[0]
    if database == COURSE_DATABASE:
        return None
    return (
        f"the course's dbt project reads its sources from database {COURSE_DATABASE}, the name DuckDB gives a file"
        f" {COURSE_DATABASE}.duckdb; this file is database {database}, so they do not resolve (Catalog"
        f' "{COURSE_DATABASE}" does not exist): name it {COURSE_DATABASE}.duckdb ([duckdb] path) to use them'
    )


def update_id(table: str, month: dt.date | None) -> str:
    """The marker's id, e.g. 'yellow_tripdata:2021-01', or the zones table's name."""
    return table if month is None else f"{table}:{month:%Y-%m}"


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


@contextmanager
def connection(warehouse: Warehouse, *, read_only: bool, what: str) -> Iterator[duckdb.DuckDBPyConnection]:
    """A connection to the file, waiting up to lock_wait seconds while another process holds it; closed on exit.

    `what` names the month for messages. Errors are one line naming the file.
    """
    # Imported here: DuckDB's client adds ~30 MB to every process that imports it (and pandas when installed),
    # and most tasks (download, conversion, other sinks) never open the warehouse.
    import duckdb

    path = warehouse.path
    deadline = time.monotonic() + warehouse.lock_wait
    while True:
        try:
            conn = duckdb.connect(str(path), read_only=read_only, config=warehouse.settings())
            break
        except duckdb.Error as exc:
            if _LOCKED not in str(exc):
                raise PipelineError(f"{what}: cannot open DuckDB file {path}: {_one_line(exc)}") from None
            if time.monotonic() >= deadline:
                holder = _HOLDER.search(str(exc))
                by = f" ({holder[1]}, PID {holder[2]})" if holder else ""
                raise PipelineError(
                    f"{what}: DuckDB file {path} is held open by another process{by} for more than [duckdb]"
                    f" lock_wait = {warehouse.lock_wait:g} seconds; close it there (DuckDB lets one process at a time"
                    f" use a file it writes) or raise lock_wait{'' if read_only else '; nothing was loaded'}"
                ) from None
            time.sleep(_RETRY_S)
    try:
        yield conn
    except duckdb.Error as exc:
        raise PipelineError(f"{what}: DuckDB file {path}: {_one_line(exc)}") from None
    finally:
        conn.close()


def _expected_columns(dataset: Dataset, with_lineage: bool) -> list[tuple[str, str]]:
    columns = [(c.name, _DUCKDB_TYPES[c.type]) for c in dataset.columns]
    return [*columns, (LINEAGE_COLUMN, "DATE")] if with_lineage else columns


def _columns(conn, warehouse: Warehouse, table: str) -> list[tuple[str, str]]:
    """The table's (column, type) list, [] when there is no such table."""
    return [(name, type_) for name, type_, _ in _described_columns(conn, warehouse, table)]


def _described_columns(conn, warehouse: Warehouse, table: str) -> list[tuple[str, str, str | None]]:
    """The table's (column, type, comment) list, [] when there is no such table. DuckDB matches names in any case,
    and its catalogue spells them as they were created: the lookup ignores case too."""
    return conn.execute(
        "SELECT column_name, data_type, comment FROM duckdb_columns() WHERE database_name = current_database()"
        " AND lower(schema_name) = lower(?) AND lower(table_name) = lower(?) ORDER BY column_index",
        [warehouse.schema, table],
    ).fetchall()


def _prepare_tables(
    conn,
    warehouse: Warehouse,
    table: str,
    dataset: Dataset,
    month: dt.date | None,
    incoming: list[tuple[str, str, str]],
) -> None:
    """Create the schema, the table (from the catalogue) and the marker table unless there, and give the table, as
    nullable columns, those of the catalogue and of the file (`incoming`: `file_columns`) it lacks, each commented
    with the month that added it. A table that is not ours (`is_ours`) is refused, with how it differs."""
    conn.execute(f"CREATE SCHEMA IF NOT EXISTS {quote_ident(warehouse.schema)}")
    with_lineage = month is not None
    found = _described_columns(conn, warehouse, table)
    expected = _expected_columns(dataset, with_lineage)
    if not found:
        columns = ",\n  ".join(
            f"{quote_ident(name)} {type_}{' NOT NULL' if name == LINEAGE_COLUMN else ''}" for name, type_ in expected
        )
        conn.execute(f"CREATE TABLE {warehouse.qualified(table)} (\n  {columns}\n)")
        found = [(name, type_, None) for name, type_ in expected]
    else:
        pairs = [(name, type_) for name, type_, _ in found]
        required = [LINEAGE_COLUMN] if with_lineage else [name for name, _ in expected]
        if not is_ours(pairs, expected, required, case_sensitive=False):
            setting = "table" if with_lineage else "zones_table"
            raise DataError(
                f"table {warehouse.schema}.{table} in {warehouse.path} does not match the {dataset.name} catalogue:"
                f" {'; '.join(column_problems(pairs, expected, case_sensitive=False))}. Nothing was changed: drop or"
                f" rename the table, or set another [duckdb] schema or {setting}"
            )
    in_file = "this month's file" if with_lineage else "the lookup's file"
    what, shown = update_id(table, month), f"{warehouse.schema}.{table}"
    for name, type_ in columns_to_add(found, expected, incoming, case_sensitive=False, what=what, table=shown,
                                      in_file=in_file):  # fmt: skip
        column = f"{warehouse.qualified(table)}.{quote_ident(name)}"
        conn.execute(f"ALTER TABLE {warehouse.qualified(table)} ADD COLUMN IF NOT EXISTS {quote_ident(name)} {type_}")
        conn.execute(f"COMMENT ON COLUMN {column} IS {quote_literal(added_by(dataset.name, month))}")
    # The shape of the PostgreSQL sink's marker table, plus the row count that "done?" compares with the table.
    conn.execute(
        f"CREATE TABLE IF NOT EXISTS {warehouse.qualified(warehouse.marker_table)} (update_id VARCHAR,"
        " target_table VARCHAR, inserted TIMESTAMP DEFAULT current_timestamp, lake_file VARCHAR, row_count BIGINT)"
    )


def _move_former_zones_table(conn, warehouse: Warehouse, table: str, dataset: Dataset) -> str | None:
    """An install from before the zones table moved: our zones table under its former name becomes `table`, with
    its marker row, in the load's transaction; returns what was done, for the log after COMMIT.

    Ours is a table of exactly our columns that our marker row names. Another table of that name (the course's
    dbt seed, in its place since `dbt seed --full-refresh`) is left alone, and the marker row naming it dropped."""
    if table.lower() == FORMER_ZONES_TABLE or _columns(conn, warehouse, table):
        return None
    if not _columns(conn, warehouse, warehouse.marker_table):
        return None  # nothing was loaded here
    marker, former = warehouse.qualified(warehouse.marker_table), update_id(FORMER_ZONES_TABLE, None)
    if not conn.execute(f"SELECT count(*) FROM {marker} WHERE update_id = ?", [former]).fetchone()[0]:
        return None
    was = f"{warehouse.schema}.{FORMER_ZONES_TABLE}"
    if _columns(conn, warehouse, FORMER_ZONES_TABLE) != _expected_columns(dataset, with_lineage=False):
        conn.execute(f"DELETE FROM {marker} WHERE update_id = ?", [former])
        return f"{was} is not the zones table loaded here any more: its marker row is dropped, the table left as it is"
    conn.execute(f"ALTER TABLE {warehouse.qualified(FORMER_ZONES_TABLE)} RENAME TO {quote_ident(table)}")
    conn.execute(
        f"UPDATE {marker} SET update_id = ?, target_table = ? WHERE update_id = ?",
        [update_id(table, None), table, former],
    )
    return f"the zones table {was} is renamed {table} ([duckdb] zones_table), out of the way of the course's dbt seed"


def _counted_batches(source: pq.ParquetFile, progress: RowProgress | None) -> Iterator[pa.RecordBatch]:
    done, total = 0, source.metadata.num_rows
    for batch in source.iter_batches(batch_size=_BATCH_ROWS):
        yield batch
        done += batch.num_rows
        if progress:
            progress(done, total)


def _insert(conn, target: str, file_schema: pa.Schema, parquet: ParquetSource, month, progress) -> int:
    """INSERT the file's rows into its columns (and the month, as the lineage column; the table's other columns are
    NULL); returns the count DuckDB reports.

    A local file is read by DuckDB itself; a lake file elsewhere is streamed in as Arrow batches, so neither
    httpfs nor the store's credentials are needed here.
    """
    names = [quote_ident(name) for name in file_schema.names]
    lineage = [quote_ident(LINEAGE_COLUMN)] if month is not None else []
    select = ", ".join(names + (["?::DATE"] if month is not None else []))
    into = f"INSERT INTO {target} ({', '.join(names + lineage)}) SELECT {select}"
    months = [month] if month is not None else []
    if isinstance(parquet, Path):
        return conn.execute(f"{into} FROM read_parquet(?)", [*months, str(parquet)]).fetchone()[0]
    source = open_parquet(parquet)
    batches = pa.RecordBatchReader.from_batches(source.schema_arrow, _counted_batches(source, progress))
    conn.register("lake_batches", batches)
    try:
        return conn.execute(f"{into} FROM lake_batches", months).fetchone()[0]
    finally:
        conn.unregister("lake_batches")


def load(
    warehouse: Warehouse,
    parquet: ParquetSource,
    *,
    dataset: Dataset,
    table: str,
    month: dt.date | None,
    lake_file: str,
    progress: RowProgress | None = None,
) -> int:
    """Replace one month of a service's table (the whole zones table, for month None) with the Parquet's rows,
    in one transaction with its marker row; returns the row count.

    `lake_file` (the lake file's fingerprint) is recorded in the marker: the month is done only for that file.
    """
    expected_rows, file_schema = pq.read_metadata(parquet).num_rows, pq.read_schema(parquet)
    update = update_id(table, month)
    incoming = file_columns(file_schema, _DUCKDB_TYPES, update)
    try:
        warehouse.path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise PipelineError(f"{update}: cannot make the folder of DuckDB file {warehouse.path}: {exc}") from None
    with connection(warehouse, read_only=False, what=update) as conn:
        target = warehouse.qualified(table)
        conn.execute("BEGIN TRANSACTION")
        moved = _move_former_zones_table(conn, warehouse, table, dataset) if month is None else None
        _prepare_tables(conn, warehouse, table, dataset, month, incoming)
        if month is None:
            conn.execute(f"DELETE FROM {target}")
        else:
            conn.execute(f"DELETE FROM {target} WHERE {quote_ident(LINEAGE_COLUMN)} = ?", [month])
        inserted = _insert(conn, target, file_schema, parquet, month, progress)
        if inserted != expected_rows:
            raise PipelineError(
                f"{update}: inserted {inserted:,} rows into {warehouse.path}, expected {expected_rows:,}"
            )
        marker = warehouse.qualified(warehouse.marker_table)
        conn.execute(f"DELETE FROM {marker} WHERE update_id = ?", [update])
        conn.execute(
            f"INSERT INTO {marker} (update_id, target_table, lake_file, row_count) VALUES (?, ?, ?, ?)",
            [update, table, lake_file, inserted],
        )
        conn.execute("COMMIT")
    if moved:
        log.info("%s: %s", warehouse.path, moved)
    return inserted


def loaded_months(
    warehouse: Warehouse, dataset: Dataset, table: str, lake_files: dict[dt.date | None, str | None]
) -> set[dt.date | None]:
    """Months (month -> the lake file's fingerprint; None: the zones table) loaded from that very lake file whose
    rows are all still there (the table holds the count the marker recorded). One query; no file, no table, a
    month redone in the lake since or rows deleted since: not loaded. A fingerprint of None asks whether the
    month is loaded from any lake file."""
    if not lake_files or not warehouse.path.exists():
        return set()  # nothing was ever loaded here (and a check does not create the file)
    ids = {update_id(table, month): month for month in lake_files}
    target, marker = warehouse.qualified(table), warehouse.qualified(warehouse.marker_table)
    if None in lake_files:
        counts = f"(SELECT NULL::DATE AS month, count(*) AS n FROM {target})"
    else:
        counts = (
            f"(SELECT {quote_ident(LINEAGE_COLUMN)} AS month, count(*) AS n FROM {target}"
            f" WHERE {quote_ident(LINEAGE_COLUMN)} IN (SELECT month FROM asked) GROUP BY ALL)"
        )
    sql = (
        "WITH asked AS (SELECT unnest(?::VARCHAR[]) AS update_id, unnest(?::VARCHAR[]) AS lake_file,"
        " unnest(?::DATE[]) AS month)"
        f" SELECT a.update_id FROM asked a JOIN {marker} m ON m.update_id = a.update_id"
        " AND (a.lake_file IS NULL OR m.lake_file = a.lake_file)"
        f" LEFT JOIN {counts} c ON c.month IS NOT DISTINCT FROM a.month"
        " WHERE m.row_count = coalesce(c.n, 0)"
    )
    import duckdb

    with connection(warehouse, read_only=True, what=f"checking {table}") as conn:
        try:
            rows = conn.execute(sql, [list(ids), list(lake_files.values()), list(lake_files)]).fetchall()
        except duckdb.CatalogException:
            return set()  # no table or no marker table yet
    return {ids[row[0]] for row in rows}
