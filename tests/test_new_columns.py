"""A column a month brings, or the catalogue gains, reaches every warehouse as a nullable column: PostgreSQL, DuckDB
and BigQuery (bqemulator) add it the first time a month has it, and extend in place the tables an earlier release
made with fewer columns; the months loaded before read NULL there. A table that is not ours is refused as before,
and a new column whose type changes in a later month is one line naming both types and both months."""

from __future__ import annotations

import dataclasses
import datetime as dt
import itertools
from pathlib import Path

import duckdb
import luigi
import psycopg2
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest
from google.cloud import bigquery as bq

from luigi_tasks import BigQueryExternalTable, IngestMonth, config
from luigi_tasks import bigquery as bq_work
from luigi_tasks.catalog import YELLOW, ZONES
from luigi_tasks.convert import to_canonical_parquet
from luigi_tasks.duckdb import _DUCKDB_TYPES, Warehouse
from luigi_tasks.duckdb import load as duckdb_load
from luigi_tasks.errors import DataError
from luigi_tasks.lake import canonical_key
from luigi_tasks.postgres import _expected_columns, load_month, load_zones
from luigi_tasks.synthetic import write_trip_csv
from tests.conftest import (
    DATA,
    PARQUET_PATH,
    luigi_command,
    luigi_settings,
    month,
    month_path,
    pipeline_settings,
    run_tasks,
    serve_csv_month,
    serve_zones,
    write_config,
)
from tests.test_cloud import cloud, month_rows  # noqa: F401 - the fixture
from tests.test_cloud import query as bq_query
from tests.test_duckdb import columns_of
from tests.test_duckdb import query as duck_query
from tests.test_postgres import query as pg_query

# The columns the catalogue gained for yellow 2009-2010 (NULL in every later month): an earlier release's yellow
# tables and lake files lack them.
FIVE = ("pickup_longitude", "pickup_latitude", "dropoff_longitude", "dropoff_latitude", "vendor_name")
EARLIER_YELLOW = dataclasses.replace(YELLOW, columns=tuple(c for c in YELLOW.columns if c.name not in FIVE))
JUNE, JULY = month("2026-06"), month("2026-07")
SOURCES = ["app", "street", None]  # request_source, row after row
MARKER = "table_updates"


def source_file(folder: Path, dataset, at: str, rows: int, seed: int, extra: dict[str, pa.Array] | None = None) -> Path:
    """A month as the TLC publishes it in Parquet: the dataset's columns with their types, then `extra`."""
    folder.mkdir(parents=True, exist_ok=True)
    csv = write_trip_csv(folder / f"trips_{at}.csv", dataset, month(at), rows, seed=seed)
    typed = folder / f"typed_{at}.parquet"
    to_canonical_parquet(csv, typed, dataset=dataset, month=month(at), source_url="x")
    table = pq.read_table(typed).replace_schema_metadata(None)
    for name, values in (extra or {}).items():
        table = table.append_column(name, values)
    raw = folder / f"{dataset.name}_tripdata_{at}.parquet"
    pq.write_table(table, raw)
    return raw


def lake_file(folder: Path, dataset, at: str, rows: int, seed: int, extra: dict[str, pa.Array] | None = None) -> Path:
    """The month's lake file as ToParquet writes it with [tlc] new_columns = keep (`dataset`: the catalogue)."""
    raw = source_file(folder / "source", dataset, at, rows, seed, extra)
    dest = folder / f"lake_{at}.parquet"
    to_canonical_parquet(raw, dest, dataset=dataset, month=month(at), source_url="x", new_columns="keep")
    return dest


def requests(rows: int) -> dict[str, pa.Array]:
    """The new columns of the later month: request_source (text, a third NULL) and request_count."""
    sources = list(itertools.islice(itertools.cycle(SOURCES), rows))
    return {"request_source": pa.array(sources, pa.string()), "request_count": pa.array(range(rows), pa.int64())}


def expected_months(june_rows: int, july_rows: int) -> list[tuple]:
    """(month, rows, request_source values, request_count values, their sum) for June (without them) and July."""
    sources = sum(1 for value in itertools.islice(itertools.cycle(SOURCES), july_rows) if value is not None)
    return [("2026-06", june_rows, 0, 0, None), ("2026-07", july_rows, sources, july_rows, sum(range(july_rows)))]


MONTHS_SQL = (
    "SELECT {month}, count(*), count(request_source), count(request_count), sum(request_count)"
    " FROM {table} GROUP BY 1 ORDER BY 1"
)


def test_a_column_a_later_month_brings_reaches_every_warehouse_and_reads_across_the_lake(
    cloud,  # noqa: F811 - the fixture
    server,
    pg_dsn,
    bigquery_client,
    bigquery_dataset,
    tmp_path,
):
    june = source_file(tmp_path / "june", YELLOW, "2026-06", 300, seed=1)
    july = source_file(tmp_path / "july", YELLOW, "2026-07", 200, seed=2, extra=requests(200))
    for raw, at in ((june, "2026-06"), (july, "2026-07")):
        server.add(month_path(PARQUET_PATH, "yellow", at), raw.read_bytes())
    serve_zones(server)
    sinks = "lake,postgres,duckdb,gcs,bigquery"
    with luigi_settings({("tlc", "source"): "parquet", ("postgres", "dsn"): pg_dsn}):
        for at in (JUNE, JULY):  # June first: the tables are made without the new columns
            result, failures = run_tasks(IngestMonth(service="yellow", month=at, sinks=sinks))
            assert failures == {} and result.status == luigi.LuigiStatusCode.SUCCESS, result.summary_text
        result, _ = run_tasks(*(IngestMonth(service="yellow", month=at, sinks=sinks) for at in (JUNE, JULY)))
        assert "Did not run any tasks" in result.summary_text
    expected = expected_months(300, 200)

    in_postgres = pg_query(pg_dsn, MONTHS_SQL.format(month="to_char(source_month, 'YYYY-MM')", table="yellow_tripdata"))
    assert [(*row[:4], row[4] and int(row[4])) for row in in_postgres] == expected
    added = pg_query(
        pg_dsn,
        "SELECT attname, format_type(atttypid, atttypmod), col_description(attrelid, attnum) FROM pg_attribute"
        " WHERE attrelid = 'yellow_tripdata'::regclass AND attname LIKE 'request%%' ORDER BY attnum",
    )
    assert added == [("request_source", "text", "added by yellow 2026-07"),
                     ("request_count", "bigint", "added by yellow 2026-07")]  # fmt: skip

    duck = cloud.parent / "taxi_rides_ny.duckdb"
    in_duckdb = duck_query(
        duck, MONTHS_SQL.format(month="strftime(source_month, '%Y-%m')", table="prod.yellow_tripdata")
    )
    assert in_duckdb == expected
    comments = duck_query(
        duck,
        "SELECT column_name, data_type, comment FROM duckdb_columns() WHERE table_name = 'yellow_tripdata'"
        " AND column_name LIKE 'request%' ORDER BY column_index",
    )
    assert comments == [("request_source", "VARCHAR", "added by yellow 2026-07"),
                        ("request_count", "BIGINT", "added by yellow 2026-07")]  # fmt: skip

    table = f"`{bigquery_dataset}.yellow_tripdata`"
    in_bigquery = bq_query(bigquery_client, MONTHS_SQL.format(month="FORMAT_DATE('%Y-%m', source_month)", table=table))
    assert in_bigquery == expected
    fields = bigquery_client.get_table(f"test-project.{bigquery_dataset}.yellow_tripdata").schema[-2:]
    assert [(f.name, f.field_type, f.mode, f.description) for f in fields] == [
        ("request_source", "STRING", "NULLABLE", "added by yellow 2026-07"),
        ("request_count", "INT64", "NULLABLE", "added by yellow 2026-07"),
    ]

    # The lake: its months read as one with DuckDB's union_by_name, or a pyarrow dataset of the unified schema.
    files = [str(cloud / canonical_key(YELLOW, at)) for at in (JUNE, JULY)]
    by_name = duckdb.sql(
        "SELECT count(*), count(request_source), count(request_count), sum(request_count)"
        " FROM read_parquet($files, union_by_name = true)",
        params={"files": files},
    ).fetchall()
    assert by_name == [(500, *expected[1][2:])]
    schema = pa.unify_schemas([pq.read_schema(file) for file in files])
    assert schema.names == [*YELLOW.schema.names, "request_source", "request_count"]
    read = pads.dataset(files, schema=schema, format="parquet").to_table()
    assert read.num_rows == 500
    assert read.column("request_count").null_count == 300
    assert read.column("request_source").to_pylist().count("street") == expected[1][2] // 2


def _changed_type_lake_files(folder: Path) -> tuple[Path, Path]:
    """June brings request_source as text; July has it as int64."""
    june = lake_file(folder / "june", YELLOW, "2026-06", 300, seed=1, extra={"request_source": pa.array(["app"] * 300)})
    july = lake_file(folder / "july", YELLOW, "2026-07", 200, seed=2,
                     extra={"request_source": pa.array(range(200), pa.int64())})  # fmt: skip
    return june, july


def _changed_type(table: str, table_type: str) -> str:
    return (
        f"yellow_tripdata:2026-07: column request_source is int64 in this month's file, but {table_type} in table"
        f" {table} since yellow 2026-06; nothing was loaded"
    )


PG_COLUMNS = (
    "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = 'yellow_tripdata'"
    " ORDER BY ordinal_position"
)
PG_COMMENTS = (
    "SELECT attname, col_description(attrelid, attnum) FROM pg_attribute WHERE attrelid = 'yellow_tripdata'::regclass"
    " AND col_description(attrelid, attnum) IS NOT NULL ORDER BY attnum"
)
PG_MONTHS = "SELECT to_char(source_month, 'YYYY-MM'), count(*), max(xmin::text::bigint) FROM yellow_tripdata GROUP BY 1"


def test_postgres_refuses_a_new_column_whose_type_changed_and_loads_nothing(pg_dsn, tmp_path):
    june, july = _changed_type_lake_files(tmp_path)
    assert load_month(pg_dsn, june, dataset=YELLOW, month=JUNE, marker_table=MARKER) == 300
    before = [pg_query(pg_dsn, sql) for sql in (PG_COLUMNS, PG_COMMENTS, PG_MONTHS, f"SELECT * FROM {MARKER}")]
    with pytest.raises(DataError) as raised:
        load_month(pg_dsn, july, dataset=YELLOW, month=JULY, marker_table=MARKER)
    assert str(raised.value) == _changed_type("yellow_tripdata", "text")
    assert [pg_query(pg_dsn, sql) for sql in (PG_COLUMNS, PG_COMMENTS, PG_MONTHS, f"SELECT * FROM {MARKER}")] == before
    assert pg_query(pg_dsn, "SELECT count(*) FROM pg_tables WHERE tablename LIKE '%%\\_load\\_%%'") == [(0,)]


def test_duckdb_refuses_a_new_column_whose_type_changed_and_loads_nothing(tmp_path):
    june, july = _changed_type_lake_files(tmp_path)
    warehouse = Warehouse(tmp_path / "w.duckdb", "prod", MARKER)
    common = {"dataset": YELLOW, "table": "yellow_tripdata", "lake_file": "1:a"}
    assert duckdb_load(warehouse, june, month=JUNE, **common) == 300
    state = [
        "SELECT column_name, data_type, comment FROM duckdb_columns() WHERE table_name = 'yellow_tripdata'",
        "SELECT source_month, count(*) FROM prod.yellow_tripdata GROUP BY 1",
        f"SELECT update_id, lake_file, row_count FROM prod.{MARKER}",
    ]
    before = [duck_query(warehouse.path, sql) for sql in state]
    with pytest.raises(DataError) as raised:
        duckdb_load(warehouse, july, month=JULY, **common)
    assert str(raised.value) == _changed_type("prod.yellow_tripdata", "VARCHAR")
    assert [duck_query(warehouse.path, sql) for sql in state] == before


def _upload(gcs_client, bucket: str, path: Path, name: str) -> str:
    gcs_client.bucket(bucket).blob(name).upload_from_filename(str(path))
    return f"gs://{bucket}/{name}"


def _load_to_bigquery(gcs_client, bucket: str, bq_dataset: str, path: Path, dataset, at: dt.date) -> int:
    uri = _upload(gcs_client, bucket, path, f"raw/{dataset.name}_{at:%Y-%m}_{path.stat().st_size}.parquet")
    rows, schema = pq.read_metadata(path).num_rows, pq.read_schema(path)
    return bq_work.load_month(bq_work.client(config.gcp()), uri, bq_dataset=bq_dataset, dataset=dataset, month=at,
                              expected_rows=rows, file_schema=schema)  # fmt: skip


def _bigquery_schema(client, bq_dataset: str) -> list[tuple]:
    table = client.get_table(f"test-project.{bq_dataset}.yellow_tripdata")
    return [(f.name, f.field_type, f.description) for f in table.schema]


def test_bigquery_refuses_a_new_column_whose_type_changed_and_loads_nothing(
    cloud,  # noqa: F811 - the fixture
    gcs_client,
    gcs_bucket,
    bigquery_client,
    bigquery_dataset,
    tmp_path,
):
    june, july = _changed_type_lake_files(tmp_path)
    assert _load_to_bigquery(gcs_client, gcs_bucket, bigquery_dataset, june, YELLOW, JUNE) == 300
    before = (_bigquery_schema(bigquery_client, bigquery_dataset), month_rows(bigquery_client, bigquery_dataset))
    with pytest.raises(DataError) as raised:
        _load_to_bigquery(gcs_client, gcs_bucket, bigquery_dataset, july, YELLOW, JULY)
    assert str(raised.value) == _changed_type(f"test-project.{bigquery_dataset}.yellow_tripdata", "STRING")
    assert (
        _bigquery_schema(bigquery_client, bigquery_dataset),
        month_rows(bigquery_client, bigquery_dataset),
    ) == before
    assert [t.table_id for t in bigquery_client.list_tables(bigquery_dataset)] == ["yellow_tripdata"]


# --- tables an earlier release made, with the catalogue as it was then (without FIVE) ---------------------------

FIVE_NULL = " AND ".join(f"{name} IS NULL" for name in FIVE)


def test_a_postgres_table_of_an_earlier_release_is_extended_in_place(pg_dsn, server, tmp_path):
    earlier = lake_file(tmp_path / "earlier", EARLIER_YELLOW, "2026-06", 300, seed=1)
    assert pq.read_schema(earlier).names == EARLIER_YELLOW.schema.names  # a lake file of that release
    load_month(pg_dsn, earlier, dataset=EARLIER_YELLOW, month=JUNE, marker_table=MARKER, lake_file="1:a")
    columns = pg_query(pg_dsn, PG_COLUMNS)
    assert [name for name, _ in columns] == [*EARLIER_YELLOW.schema.names, "source_month"]
    rows_sql = "SELECT * FROM yellow_tripdata ORDER BY tpep_pickup_datetime, tpep_dropoff_datetime, total_amount"
    june_rows, june_xmin = pg_query(pg_dsn, rows_sql), pg_query(pg_dsn, PG_MONTHS)

    # Today's release loads July through the command line: the table gains the five columns, nullable.
    serve_csv_month(server, "yellow", "2026-07", write_trip_csv(tmp_path / "july.csv", YELLOW, JULY, 200).read_bytes())
    serve_zones(server)
    settings = {**pipeline_settings(server, tmp_path / "lake"), ("postgres", "dsn"): pg_dsn}
    done = luigi_command(["IngestMonth", "--service", "yellow", "--month", "2026-07", "--sinks", "lake,postgres",
                          "--local-scheduler"], write_config(tmp_path / "luigi.cfg", settings))  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert pg_query(pg_dsn, PG_COLUMNS) == [
        *columns,
        *[(name, "text" if name == "vendor_name" else "double precision") for name in FIVE],
    ]
    assert pg_query(pg_dsn, PG_COMMENTS) == [(name, "added by yellow 2026-07") for name in FIVE]
    june_now = pg_query(pg_dsn, rows_sql.replace("ORDER BY", "WHERE source_month = '2026-06-01' ORDER BY"))
    assert [row[: len(columns)] for row in june_now] == june_rows  # the earlier rows as they were
    assert all(row[len(columns) :] == (None,) * 5 for row in june_now)
    assert dict((m, (n, xmin)) for m, n, xmin in pg_query(pg_dsn, PG_MONTHS))["2026-06"] == (300, june_xmin[0][2])
    assert pg_query(pg_dsn, f"SELECT count(*) FROM yellow_tripdata WHERE source_month = '2026-07-01' AND {FIVE_NULL}")
    assert dict((m, n) for m, n, _ in pg_query(pg_dsn, PG_MONTHS)) == {"2026-06": 300, "2026-07": 200}

    # The earlier release's lake file loads again with today's code: its missing columns are NULL.
    assert load_month(pg_dsn, earlier, dataset=YELLOW, month=JUNE, marker_table=MARKER) == 300
    assert pg_query(pg_dsn, f"SELECT count(*) FROM yellow_tripdata WHERE {FIVE_NULL}") == [(500,)]


NOT_OURS = [
    # no lineage column (nor partitions): a table of someone else's
    ("CREATE TABLE yellow_tripdata ({columns})",
     "missing pickup_longitude, pickup_latitude, dropoff_longitude, dropoff_latitude, vendor_name, source_month"),
    # a column of the catalogue with another type
    ("CREATE TABLE yellow_tripdata ({integer_passengers}, source_month date NOT NULL) PARTITION BY LIST (source_month)",
     "passenger_count is integer, expected bigint"),
    # not partitioned by the lineage column
    ("CREATE TABLE yellow_tripdata ({columns}, source_month date NOT NULL)", "it is not partitioned by source_month"),
]  # fmt: skip


@pytest.mark.parametrize("ddl, problem", NOT_OURS)
def test_a_postgres_table_that_is_not_ours_is_refused_though_it_lacks_columns_only(pg_dsn, tmp_path, ddl, problem):
    columns = ", ".join(f'"{name}" {type_}' for name, type_ in _expected_columns(EARLIER_YELLOW, with_lineage=False))
    integer_passengers = columns.replace('"passenger_count" bigint', '"passenger_count" integer')
    with psycopg2.connect(pg_dsn) as conn, conn.cursor() as cur:
        cur.execute(ddl.format(columns=columns, integer_passengers=integer_passengers))
    conn.close()
    before = pg_query(pg_dsn, PG_COLUMNS)
    parquet = lake_file(tmp_path, YELLOW, "2026-07", 100, seed=1)
    with pytest.raises(DataError) as raised:
        load_month(pg_dsn, parquet, dataset=YELLOW, month=JULY, marker_table=MARKER)
    message = str(raised.value)
    assert message.startswith("table yellow_tripdata does not match the yellow catalogue: missing pickup_longitude")
    assert problem in message
    assert message.endswith(". Nothing was changed: drop or rename the table, or load into another schema")
    assert pg_query(pg_dsn, PG_COLUMNS) == before
    assert pg_query(pg_dsn, "SELECT to_regclass('table_updates') IS NULL") == [(True,)]


def test_a_duckdb_table_of_an_earlier_release_is_extended_in_place(tmp_path):
    warehouse = Warehouse(tmp_path / "w.duckdb", "prod", MARKER)
    earlier = lake_file(tmp_path / "earlier", EARLIER_YELLOW, "2026-06", 300, seed=1)
    common = {"table": "yellow_tripdata", "lake_file": "1:a"}
    assert duckdb_load(warehouse, earlier, dataset=EARLIER_YELLOW, month=JUNE, **common) == 300
    columns = columns_of(warehouse.path, "prod", "yellow_tripdata")
    assert [name for name, _ in columns] == [*EARLIER_YELLOW.schema.names, "source_month"]
    june_rows = duck_query(warehouse.path, "SELECT * FROM prod.yellow_tripdata ORDER BY ALL")

    today = lake_file(tmp_path / "today", YELLOW, "2026-07", 200, seed=2)
    assert duckdb_load(warehouse, today, dataset=YELLOW, month=JULY, **common) == 200
    five = [(name, "VARCHAR" if name == "vendor_name" else "DOUBLE") for name in FIVE]
    assert columns_of(warehouse.path, "prod", "yellow_tripdata") == [*columns, *five]
    comments = "SELECT column_name, comment FROM duckdb_columns() WHERE comment IS NOT NULL ORDER BY column_index"
    assert duck_query(warehouse.path, comments) == [(name, "added by yellow 2026-07") for name in FIVE]
    june_now = f"SELECT * EXCLUDE ({', '.join(FIVE)}) FROM prod.yellow_tripdata WHERE source_month = ? ORDER BY ALL"
    assert duck_query(warehouse.path, june_now, [JUNE]) == june_rows  # the earlier rows as they were
    months = (
        f"SELECT strftime(source_month, '%Y-%m'), count(*), count(*) FILTER ({FIVE_NULL}) FROM prod.yellow_tripdata"
        " GROUP BY 1 ORDER BY 1"
    )
    assert duck_query(warehouse.path, months) == [("2026-06", 300, 300), ("2026-07", 200, 200)]

    # The earlier release's lake file loads again with today's code: its missing columns are NULL.
    assert duckdb_load(warehouse, earlier, dataset=YELLOW, month=JUNE, **common) == 300
    assert duck_query(warehouse.path, f"SELECT count(*) FROM prod.yellow_tripdata WHERE {FIVE_NULL}") == [(500,)]


@pytest.mark.parametrize(
    "source_month, problem",
    [("", "missing pickup_longitude, pickup_latitude, dropoff_longitude, dropoff_latitude, vendor_name, source_month"),
     (", source_month DATE NOT NULL", "passenger_count is INTEGER, expected BIGINT")],
)  # fmt: skip
def test_a_duckdb_table_that_is_not_ours_is_refused_though_it_lacks_columns_only(tmp_path, source_month, problem):
    warehouse = Warehouse(tmp_path / "w.duckdb", "prod", MARKER)
    types = {name: type_ for name, type_ in columns_of_catalogue(EARLIER_YELLOW)}
    if source_month:
        types["passenger_count"] = "INTEGER"
    with duckdb.connect(str(warehouse.path)) as conn:
        columns = ", ".join(f'"{name}" {type_}' for name, type_ in types.items())
        conn.execute(f"CREATE SCHEMA prod; CREATE TABLE prod.yellow_tripdata ({columns}{source_month})")
    before = columns_of(warehouse.path, "prod", "yellow_tripdata")
    today = lake_file(tmp_path, YELLOW, "2026-07", 100, seed=1)
    with pytest.raises(DataError) as raised:
        duckdb_load(warehouse, today, dataset=YELLOW, table="yellow_tripdata", month=JULY, lake_file="1:a")
    message = str(raised.value)
    assert message.startswith(f"table prod.yellow_tripdata in {warehouse.path} does not match the yellow catalogue:")
    assert problem in message
    assert columns_of(warehouse.path, "prod", "yellow_tripdata") == before


def columns_of_catalogue(dataset) -> list[tuple[str, str]]:
    return [(c.name, _DUCKDB_TYPES[c.type]) for c in dataset.columns]


def test_a_bigquery_table_of_an_earlier_release_is_extended_in_place(
    cloud,  # noqa: F811 - the fixture
    gcs_client,
    gcs_bucket,
    bigquery_client,
    bigquery_dataset,
    tmp_path,
):
    earlier = lake_file(tmp_path / "earlier", EARLIER_YELLOW, "2026-06", 300, seed=1)
    assert _load_to_bigquery(gcs_client, gcs_bucket, bigquery_dataset, earlier, EARLIER_YELLOW, JUNE) == 300
    before = _bigquery_schema(bigquery_client, bigquery_dataset)
    assert [name for name, _, _ in before] == [*EARLIER_YELLOW.schema.names, "source_month"]
    table = f"`{bigquery_dataset}.yellow_tripdata`"
    names = ", ".join(f"`{name}`" for name, _, _ in before)
    order = "ORDER BY tpep_pickup_datetime, tpep_dropoff_datetime, total_amount, trip_distance"
    june_rows = bq_query(bigquery_client, f"SELECT {names} FROM {table} {order}")

    today = lake_file(tmp_path / "today", YELLOW, "2026-07", 200, seed=2)
    assert _load_to_bigquery(gcs_client, gcs_bucket, bigquery_dataset, today, YELLOW, JULY) == 200
    five = [(name, "STRING" if name == "vendor_name" else "FLOAT64", "added by yellow 2026-07") for name in FIVE]
    assert _bigquery_schema(bigquery_client, bigquery_dataset) == [*before, *five]
    june = f"SELECT {names} FROM {table} WHERE source_month = DATE '2026-06-01' {order}"
    assert bq_query(bigquery_client, june) == june_rows  # the earlier rows as they were
    assert month_rows(bigquery_client, bigquery_dataset) == {"2026-06-01": 300, "2026-07-01": 200}
    assert bq_query(bigquery_client, f"SELECT COUNT(*) FROM {table} WHERE {FIVE_NULL}") == [(500,)]

    # The earlier release's lake file loads again with today's code: its missing columns are NULL.
    assert _load_to_bigquery(gcs_client, gcs_bucket, bigquery_dataset, earlier, YELLOW, JUNE) == 300
    assert month_rows(bigquery_client, bigquery_dataset) == {"2026-06-01": 300, "2026-07-01": 200}
    assert bq_query(bigquery_client, f"SELECT COUNT(*) FROM {table} WHERE {FIVE_NULL}") == [(500,)]


def test_a_bigquery_table_without_the_lineage_column_is_refused_though_it_lacks_columns_only(
    cloud,  # noqa: F811 - the fixture
    gcs_client,
    gcs_bucket,
    bigquery_client,
    bigquery_dataset,
    tmp_path,
):
    table_id = f"test-project.{bigquery_dataset}.yellow_tripdata"
    bigquery_client.create_table(bq.Table(table_id, schema=bq_work.schema(EARLIER_YELLOW, with_lineage=False)))
    before = _bigquery_schema(bigquery_client, bigquery_dataset)
    today = lake_file(tmp_path, YELLOW, "2026-07", 100, seed=1)
    with pytest.raises(DataError) as raised:
        _load_to_bigquery(gcs_client, gcs_bucket, bigquery_dataset, today, YELLOW, JULY)
    assert str(raised.value) == (
        f"BigQuery table {table_id} does not match the yellow catalogue: missing pickup_longitude, pickup_latitude,"
        " dropoff_longitude, dropoff_latitude, vendor_name, source_month. Nothing was changed"
    )
    assert _bigquery_schema(bigquery_client, bigquery_dataset) == before


def test_the_external_table_takes_the_columns_the_months_of_the_lake_added(
    cloud,  # noqa: F811 - the fixture
    server,
    gcs_bucket,
    bigquery_client,
    bigquery_dataset,
    tmp_path,
):
    # The emulator makes a plain empty table of an external one: the definition and its schema are what it shows.
    extra = {
        "2026-06": {},
        "2026-07": requests(200),
        "2026-08": {"request_count": pa.array(["many"] * 100)},  # the same name, now text
    }
    for n, (at, columns) in enumerate(extra.items()):
        raw = source_file(tmp_path / at, YELLOW, at, 100 + 100 * (n == 1), seed=n, extra=columns)
        server.add(month_path(PARQUET_PATH, "yellow", at), raw.read_bytes())
    serve_zones(server)
    task = BigQueryExternalTable(service="yellow")
    catalogue = [(f.name, f.field_type, None) for f in bq_work.schema(YELLOW, with_lineage=False)]
    with luigi_settings({("tlc", "source"): "parquet"}):
        assert run_tasks(IngestMonth(service="yellow", month=JUNE))[1] == {}
        assert not task.complete()
        assert run_tasks(task)[1] == {}
        assert task.complete()
        assert [(f.name, f.field_type, f.description) for f in task.definition().schema] == catalogue

        assert run_tasks(IngestMonth(service="yellow", month=JULY))[1] == {}
        assert not task.complete()  # July added columns: the table lacks them
        added = [  # by name within a month, as its manifest lists them
            ("request_count", "INT64", "added by yellow 2026-07"),
            ("request_source", "STRING", "added by yellow 2026-07"),
        ]
        assert [(f.name, f.field_type, f.description) for f in task.definition().schema] == [*catalogue, *added]
        assert run_tasks(task)[1] == {}
        assert task.complete()
        table = bigquery_client.get_table(f"test-project.{bigquery_dataset}.yellow_tripdata_external")
        assert [(f.name, f.field_type, f.description) for f in table.schema] == [*catalogue, *added]

        assert run_tasks(IngestMonth(service="yellow", month=month("2026-08")))[1] == {}
        with pytest.raises(DataError) as raised:
            task.complete()
        assert str(raised.value) == (
            "yellow_tripdata_external: column request_count is string in yellow 2026-08's file, but int64 in yellow"
            " 2026-07's; an external table reads every month as one type: nothing was changed"
        )
        result, _ = run_tasks(BigQueryExternalTable(service="yellow"))  # luigi says so in one line, and stops
        assert not result.scheduling_succeeded
    table = bigquery_client.get_table(f"test-project.{bigquery_dataset}.yellow_tripdata_external")
    assert [(f.name, f.field_type, f.description) for f in table.schema] == [*catalogue, *added]


def _zone_lookups(folder: Path) -> tuple[Path, Path]:
    """The zone lookup's lake file, and one of a lookup that brings a column (zone_note) the catalogue lacks."""
    plain = folder / "zones.parquet"
    to_canonical_parquet(DATA / "taxi_zone_lookup.csv", plain, dataset=ZONES, month=None, source_url="x")
    table = pq.read_table(plain).replace_schema_metadata(None)
    notes = pa.array(["airport" if "Airport" in (zone or "") else None for zone in table.column("Zone").to_pylist()])
    raw = folder / "taxi_zone_lookup.parquet"
    pq.write_table(table.append_column("zone_note", notes), raw)
    noted = folder / "zones_noted.parquet"
    to_canonical_parquet(raw, noted, dataset=ZONES, month=None, source_url="x", new_columns="keep")
    return plain, noted


def test_a_zone_lookup_that_brings_a_column_loads_into_postgres_and_duckdb(pg_dsn, tmp_path):
    plain, noted = _zone_lookups(tmp_path)
    notes = pq.read_table(noted).column("zone_note").drop_null().to_pylist()
    assert notes == ["airport"] * 3  # Newark, JFK and LaGuardia
    warehouse = Warehouse(tmp_path / "w.duckdb", "prod", MARKER)
    counts = "SELECT count(*), count(zone_note) FROM {}"
    for lookup, noted_rows in ((plain, None), (noted, 3), (plain, 0)):  # the column stays, NULL when not loaded
        assert load_zones(pg_dsn, lookup, marker_table=MARKER) == 265
        assert duckdb_load(warehouse, lookup, dataset=ZONES, table="zones", month=None, lake_file="1:a") == 265
        if noted_rows is not None:
            assert pg_query(pg_dsn, counts.format("zones")) == [(265, noted_rows)]
            assert duck_query(warehouse.path, counts.format("prod.zones")) == [(265, noted_rows)]
    assert pg_query(pg_dsn, "SELECT col_description('zones'::regclass, 5)") == [("added by the zone lookup",)]
    assert duck_query(warehouse.path, "SELECT comment FROM duckdb_columns() WHERE column_name = 'zone_note'") == [
        ("added by the zone lookup",)
    ]
