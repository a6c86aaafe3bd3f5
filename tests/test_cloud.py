"""The GCS and BigQuery sinks against fake-gcs-server and bqemulator, through the official clients."""

from __future__ import annotations

import collections
import datetime as dt

import luigi
import pyarrow.parquet as pq
import pytest
from google.cloud import bigquery as bq

from luigi_tasks import Backfill, IngestMonth, LoadToBigQuery, UploadToGCS, config
from luigi_tasks import bigquery as bq_work
from luigi_tasks.catalog import YELLOW
from luigi_tasks.errors import DataError, PipelineError
from luigi_tasks.gcs import fingerprint
from tests.conftest import DATA, luigi_settings, month, run_tasks, serve_csv_month, serve_zones

YELLOW_HEAD = (DATA / "yellow_tripdata_2020-07_head266.csv").read_bytes()
GREEN_HEAD = (DATA / "green_tripdata_2019-01_head99.csv").read_bytes()


@pytest.fixture
def cloud(lake, server, gcs_bucket, bigquery_dataset, bigquery_env):
    """The lake fixture plus [gcp] pointing at the emulators, with a fresh bucket and dataset."""
    settings = {
        ("gcp", "project"): "test-project",
        ("gcp", "bucket"): gcs_bucket,
        ("gcp", "prefix"): "raw",
        ("gcp", "dataset"): bigquery_dataset,
    }
    with luigi_settings(settings):
        yield lake


@pytest.fixture
def mirror(cloud, s3_bucket, s3_env):
    """The cloud fixture plus [s3] bucket pointing at moto's server."""
    with luigi_settings({("s3", "bucket"): s3_bucket, ("s3", "prefix"): "raw"}):
        yield cloud


def query(client: bq.Client, sql: str) -> list[tuple]:
    return [tuple(row.values()) for row in client.query(sql).result()]


def month_rows(client: bq.Client, dataset: str, table: str = "yellow_tripdata") -> dict[str, int]:
    rows = query(client, f"SELECT CAST(source_month AS STRING), COUNT(*) FROM `{dataset}.{table}` GROUP BY 1")
    return dict(sorted(rows))


def test_upload_twice_is_one_object_and_a_corrupt_one_is_replaced(cloud, server, gcs_client, gcs_bucket):
    serve_csv_month(server, "yellow", "2020-07", YELLOW_HEAD)
    task = UploadToGCS(service="yellow", month=month("2020-07"))
    result, failures = run_tasks(task)
    assert failures == {} and result.status == luigi.LuigiStatusCode.SUCCESS
    name = "raw/yellow/2020/yellow_tripdata_2020-07.parquet"
    assert [b.name for b in gcs_client.list_blobs(gcs_bucket)] == [name]
    local = cloud / "yellow/2020/yellow_tripdata_2020-07.parquet"
    blob = gcs_client.bucket(gcs_bucket).get_blob(name)
    assert (blob.size, blob.crc32c) == (fingerprint(local).size, fingerprint(local).crc32c)
    generation = blob.generation

    result, _ = run_tasks(UploadToGCS(service="yellow", month=month("2020-07")))
    assert "Did not run any tasks" in result.summary_text
    assert gcs_client.bucket(gcs_bucket).get_blob(name).generation == generation  # not uploaded again

    gcs_client.bucket(gcs_bucket).blob(name).upload_from_string(b"PAR1 not the month PAR1")
    result, failures = run_tasks(UploadToGCS(service="yellow", month=month("2020-07")))
    assert failures == {}
    assert gcs_client.bucket(gcs_bucket).blob(name).download_as_bytes() == local.read_bytes()


def test_missing_bucket_is_named(cloud, server):
    serve_csv_month(server, "yellow", "2020-07", YELLOW_HEAD)
    with luigi_settings({("gcp", "bucket"): "no-such-bucket"}):
        result, failures = run_tasks(UploadToGCS(service="yellow", month=month("2020-07")))
    assert not result.scheduling_succeeded
    assert "GCS bucket no-such-bucket does not exist" in result.summary_text or any(
        "no-such-bucket" in str(e) for e in failures.values()
    )


def test_load_month_twice_counts_once_and_reload_leaves_the_other(cloud, server, bigquery_client, bigquery_dataset):
    for at in ("2020-07", "2020-08"):
        serve_csv_month(server, "yellow", at, YELLOW_HEAD)
    serve_zones(server)
    tasks = [IngestMonth(service="yellow", month=month(at), sinks="lake,gcs,bigquery") for at in ("2020-07", "2020-08")]
    result, failures = run_tasks(*tasks)
    assert failures == {} and result.status == luigi.LuigiStatusCode.SUCCESS, result.summary_text
    assert month_rows(bigquery_client, bigquery_dataset) == {"2020-07-01": 266, "2020-08-01": 266}

    result, _ = run_tasks(*tasks)
    assert "Did not run any tasks" in result.summary_text

    # Reload July alone (as after a source fix): August's rows are the same rows as before.
    august = (
        f"SELECT SUM(total_amount), COUNT(*) FROM `{bigquery_dataset}.yellow_tripdata`"
        " WHERE source_month = '2020-08-01'"
    )
    before = query(bigquery_client, august)
    bq_work.load_month(
        bq_work.client(config.gcp()),
        UploadToGCS(service="yellow", month=month("2020-07")).output().uri,
        bq_dataset=bigquery_dataset,
        dataset=YELLOW,
        month=month("2020-07"),
        expected_rows=266,
        file_schema=pq.read_schema(cloud / "yellow/2020/yellow_tripdata_2020-07.parquet"),
    )
    assert month_rows(bigquery_client, bigquery_dataset) == {"2020-07-01": 266, "2020-08-01": 266}
    assert query(bigquery_client, august) == before
    staging = [t.table_id for t in bigquery_client.list_tables(bigquery_dataset) if t.table_id.startswith("_staging")]
    assert staging == []

    # The zoomcamp's join of trips to zones.
    joined = query(
        bigquery_client,
        f"""SELECT z.Borough, COUNT(*) FROM `{bigquery_dataset}.yellow_tripdata` t
            JOIN `{bigquery_dataset}.zones` z ON t.PULocationID = z.LocationID
            WHERE t.source_month = '2020-07-01' GROUP BY 1""",
    )
    zones = {r["LocationID"]: r["Borough"] for r in pq.read_table(cloud / "zones/taxi_zone_lookup.parquet").to_pylist()}
    trips = pq.read_table(cloud / "yellow/2020/yellow_tripdata_2020-07.parquet")["PULocationID"].to_pylist()
    assert dict(joined) == dict(collections.Counter(zones[pu] for pu in trips))


def test_datetimes_and_nulls_arrive_as_written(cloud, server, bigquery_client, bigquery_dataset):
    serve_csv_month(server, "yellow", "2020-07", YELLOW_HEAD)
    serve_zones(server)
    run_tasks(LoadToBigQuery(service="yellow", month=month("2020-07")))
    [row] = query(
        bigquery_client,
        f"""SELECT tpep_pickup_datetime, passenger_count, airport_fee FROM `{bigquery_dataset}.yellow_tripdata`
            WHERE tpep_pickup_datetime = DATETIME '2020-07-01 00:25:32' AND DOLocationID = 75""",
    )
    assert row == (dt.datetime(2020, 7, 1, 0, 25, 32), 1, None)


def test_missing_dataset_and_conflicting_table(cloud, server, bigquery_client, bigquery_dataset):
    serve_csv_month(server, "yellow", "2020-07", YELLOW_HEAD)
    with luigi_settings({("gcp", "dataset"): "no_such_dataset"}):
        _, failures = run_tasks(LoadToBigQuery(service="yellow", month=month("2020-07")))
    [error] = failures.values()
    assert isinstance(error, PipelineError)
    assert str(error) == "BigQuery dataset test-project.no_such_dataset does not exist: create it first"

    table = bq.Table(f"test-project.{bigquery_dataset}.yellow_tripdata",
                     schema=[bq.SchemaField("VendorID", "STRING"), bq.SchemaField("other", "INT64")])  # fmt: skip
    bigquery_client.create_table(table)
    bigquery_client.query(f"INSERT INTO `{bigquery_dataset}.yellow_tripdata` VALUES ('x', 1)").result()
    _, failures = run_tasks(LoadToBigQuery(service="yellow", month=month("2020-07")))
    [error] = failures.values()
    assert isinstance(error, DataError)
    message = str(error)
    assert message.startswith(f"BigQuery table test-project.{bigquery_dataset}.yellow_tripdata does not match")
    assert "unexpected other" in message and "VendorID is STRING, expected INT64" in message
    assert query(bigquery_client, f"SELECT * FROM `{bigquery_dataset}.yellow_tripdata`") == [("x", 1)]


def test_every_sink_for_two_services_and_two_months_then_a_rerun_does_nothing(
    mirror, server, pg_dsn, bigquery_client, bigquery_dataset, gcs_client, gcs_bucket, s3_client, s3_bucket, capsys
):
    for at in ("2020-07", "2020-08"):
        serve_csv_month(server, "yellow", at, YELLOW_HEAD)
        serve_csv_month(server, "green", at, GREEN_HEAD)
    serve_zones(server)
    backfill = dict(services="yellow,green", start=month("2020-07"), stop=month("2020-08"),
                    sinks="lake,postgres,gcs,bigquery,s3")  # fmt: skip
    with luigi_settings({("postgres", "dsn"): pg_dsn}):
        result, failures = run_tasks(Backfill(**backfill))
        assert failures == {} and result.status == luigi.LuigiStatusCode.SUCCESS, result.summary_text
        assert month_rows(bigquery_client, bigquery_dataset, "green_tripdata") == {"2020-07-01": 99, "2020-08-01": 99}
        assert len(list(gcs_client.list_blobs(gcs_bucket))) == 5  # four months and the zones
        assert s3_client.list_objects_v2(Bucket=s3_bucket)["KeyCount"] == 5

        requests = server.total_requests()
        result, _ = run_tasks(Backfill(**backfill))
        assert "Did not run any tasks" in result.summary_text
        assert server.total_requests() == requests
        capsys.readouterr()
        run_tasks(Backfill(dry_run=True, **backfill))
        out = capsys.readouterr().out
    assert "yellow: 2 done 2020-07..2020-08" in out and "green: 0 to run" in out


def test_s3_mirror_uploads_once_and_verifies_the_etag(mirror, server, s3_client, s3_bucket):
    from luigi_tasks import UploadToS3
    from luigi_tasks.s3 import expected_etag

    serve_csv_month(server, "yellow", "2020-07", YELLOW_HEAD)
    result, failures = run_tasks(UploadToS3(service="yellow", month=month("2020-07")))
    assert failures == {} and result.status == luigi.LuigiStatusCode.SUCCESS
    key = "raw/yellow/2020/yellow_tripdata_2020-07.parquet"
    local = mirror / "yellow/2020/yellow_tripdata_2020-07.parquet"
    head = s3_client.head_object(Bucket=s3_bucket, Key=key)
    assert head["ETag"].strip('"') == expected_etag(local)
    assert s3_client.get_object(Bucket=s3_bucket, Key=key)["Body"].read() == local.read_bytes()
    modified = head["LastModified"]

    result, _ = run_tasks(UploadToS3(service="yellow", month=month("2020-07")))
    assert "Did not run any tasks" in result.summary_text
    assert s3_client.head_object(Bucket=s3_bucket, Key=key)["LastModified"] == modified


def test_multipart_etag_matches_a_large_file(mirror, s3_client, s3_bucket, tmp_path):
    from luigi_tasks import s3 as s3_work

    big = tmp_path / "big.bin"
    big.write_bytes(bytes(range(256)) * (80_000))  # 20 MB: three 8 MiB parts
    assert s3_work.upload_file(s3_work.client(), big, s3_bucket, "x/big.bin") is True
    assert s3_work.expected_etag(big).endswith("-3")
    assert s3_work.upload_file(s3_work.client(), big, s3_bucket, "x/big.bin") is False  # same bytes: skipped


def test_transfer_s3_to_gcs_streams_verifies_and_skips_on_rerun(mirror, s3_client, s3_bucket, gcs_client, gcs_bucket):
    from luigi_tasks import TransferS3ToGCS

    key = "raw/green/2019/green_tripdata_2019-01.parquet"
    payload = (DATA / "green_tripdata_2019-01_head99.csv").read_bytes() * 200  # 1.8 MB, any bytes will do
    s3_client.put_object(Bucket=s3_bucket, Key=key, Body=payload)
    result, failures = run_tasks(TransferS3ToGCS(service="green", month=month("2019-01")))
    assert failures == {} and result.status == luigi.LuigiStatusCode.SUCCESS
    blob = gcs_client.bucket(gcs_bucket).get_blob(key)
    assert blob.download_as_bytes() == payload
    assert blob.metadata["s3-source"] == f"s3://{s3_bucket}/{key}"
    generation = blob.generation

    result, _ = run_tasks(TransferS3ToGCS(service="green", month=month("2019-01")))
    assert "Did not run any tasks" in result.summary_text
    assert gcs_client.bucket(gcs_bucket).get_blob(key).generation == generation

    s3_client.put_object(Bucket=s3_bucket, Key=key, Body=payload + b"more")
    run_tasks(TransferS3ToGCS(service="green", month=month("2019-01")))
    assert gcs_client.bucket(gcs_bucket).get_blob(key).download_as_bytes() == payload + b"more"


def test_transfer_of_a_month_missing_from_s3_names_the_object(mirror, s3_bucket, gcs_client, gcs_bucket):
    from luigi_tasks import TransferS3ToGCS

    task = TransferS3ToGCS(service="green", month=month("2019-02"))
    result, failures = run_tasks(task)
    assert result.status == luigi.LuigiStatusCode.FAILED
    key = "raw/green/2019/green_tripdata_2019-02.parquet"
    assert str(failures[task.task_id]) == f"s3://{s3_bucket}/{key} does not exist (or this account cannot see it)"
    assert list(gcs_client.list_blobs(gcs_bucket)) == []


def test_missing_s3_bucket_is_named(mirror, server):
    from luigi_tasks import UploadToS3

    serve_csv_month(server, "yellow", "2020-07", YELLOW_HEAD)
    with luigi_settings({("s3", "bucket"): "no-such-s3-bucket"}):
        result, failures = run_tasks(UploadToS3(service="yellow", month=month("2020-07")))
    assert not result.scheduling_succeeded
    assert "S3 bucket no-such-s3-bucket does not exist" in result.summary_text + "".join(map(str, failures.values()))


def test_external_table_definition_has_the_catalogue_schema(cloud, bigquery_client, bigquery_dataset, gcs_bucket):
    # The emulator cannot read external tables: check the definition a real BigQuery would get, and that
    # creating it goes through.
    from luigi_tasks import BigQueryExternalTable

    task = BigQueryExternalTable(service="green")
    table = task.definition()
    config = table.external_data_configuration
    assert config.source_format == "PARQUET"
    assert config.autodetect is False
    assert config.source_uris == [f"gs://{gcs_bucket}/raw/green/*.parquet"]
    assert [(f.name, f.field_type) for f in table.schema][14] == ("ehail_fee", "FLOAT64")  # never a null type
    assert table.table_id == "green_tripdata_external"
    result, failures = run_tasks(task)
    assert failures == {} and result.status == luigi.LuigiStatusCode.SUCCESS
    assert task.complete()
