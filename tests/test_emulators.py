"""The emulators answer the official clients over their real protocols: GCS, BigQuery and S3."""

from __future__ import annotations

import base64
import hashlib
import os
from pathlib import Path

import boto3
import google_crc32c
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import requests
from boto3.s3.transfer import TransferConfig
from botocore.client import BaseClient
from google.auth.credentials import AnonymousCredentials
from google.cloud import bigquery, storage
from google.cloud.bigquery_storage_v1 import BigQueryReadClient

from tests.emulators import PROJECT, EmulatorError, FakeGcsServer, ProcessEmulator

MIB = 1024 * 1024


def payload(size: int) -> bytes:
    return os.urandom(size)


def record_requests(client: storage.Client) -> list[requests.PreparedRequest]:
    """Every HTTP request the client sends from now on."""
    sent: list[requests.PreparedRequest] = []
    client._http.hooks["response"].append(lambda response, **_: sent.append(response.request))
    return sent


# --- GCS ------------------------------------------------------------------------------------------------------


def test_gcs_resumable_upload_in_chunks_and_download(gcs_client: storage.Client, gcs_bucket: str, tmp_path: Path):
    data = payload(9 * MIB)  # over the client's 8 MiB multipart limit: a resumable upload
    source = tmp_path / "big.bin"
    source.write_bytes(data)
    blob = gcs_client.bucket(gcs_bucket).blob("lake/big.bin", chunk_size=4 * MIB)
    sent = record_requests(gcs_client)

    blob.upload_from_filename(source)

    assert any("uploadType=resumable" in (r.url or "") for r in sent)
    assert sum(r.method == "PUT" for r in sent) == 3  # 4 + 4 + 1 MiB
    target = tmp_path / "back.bin"
    gcs_client.bucket(gcs_bucket).blob("lake/big.bin").download_to_filename(target, checksum="crc32c")
    assert target.read_bytes() == data


def test_gcs_metadata_has_crc32c_and_md5(gcs_client: storage.Client, gcs_bucket: str):
    data = payload(100_000)
    gcs_client.bucket(gcs_bucket).blob("x.bin").upload_from_string(data)

    blob = gcs_client.bucket(gcs_bucket).get_blob("x.bin")

    assert blob is not None
    assert blob.size == len(data)
    assert blob.crc32c == base64.b64encode(google_crc32c.Checksum(data).digest()).decode()
    assert blob.md5_hash == base64.b64encode(hashlib.md5(data).digest()).decode()
    assert blob.download_as_bytes(checksum="md5") == data


def test_gcs_list_with_prefix_and_delimiter(gcs_client: storage.Client, gcs_bucket: str):
    bucket = gcs_client.bucket(gcs_bucket)
    for name in ("lake/a.parquet", "lake/year=2024/b.parquet", "other.txt"):
        bucket.blob(name).upload_from_string(b"x")

    assert [b.name for b in gcs_client.list_blobs(gcs_bucket, prefix="lake/")] == [
        "lake/a.parquet",
        "lake/year=2024/b.parquet",
    ]
    page = gcs_client.list_blobs(gcs_bucket, prefix="lake/", delimiter="/")
    assert [b.name for b in page] == ["lake/a.parquet"]
    assert page.prefixes == {"lake/year=2024/"}


def test_gcs_env_alone_points_a_default_client_at_the_emulator(gcs_bucket: str):
    client = storage.Client()  # STORAGE_EMULATOR_HOST set: anonymous credentials, no project lookup

    assert gcs_bucket in [b.name for b in client.list_buckets()]


def test_gcs_objects_are_plain_files_under_the_root(gcs_client: storage.Client, gcs_bucket: str, gcs_server):
    gcs_client.bucket(gcs_bucket).blob("lake/year=2024/a.bin").upload_from_string(b"abc")

    assert (gcs_server.root / gcs_bucket / "lake" / "year=2024" / "a.bin").read_bytes() == b"abc"


# --- BigQuery -------------------------------------------------------------------------------------------------

SCHEMA = [
    bigquery.SchemaField("id", "INT64", mode="REQUIRED"),
    bigquery.SchemaField("zone", "STRING"),
    bigquery.SchemaField("fare", "FLOAT64"),
]


def write_parquet(path: Path, ids: list[int]) -> Path:
    """Columns in the table's order: the emulator matches Parquet columns by position, not by name."""
    table = pa.table(
        {
            "id": pa.array(ids, pa.int64()),
            "zone": [f"z{i % 2}" for i in ids],
            "fare": [float(i) * 1.5 for i in ids],
        }
    )
    pq.write_table(table, path)
    return path


def rows(client: bigquery.Client, sql: str, **params: int) -> list[tuple]:
    config = bigquery.QueryJobConfig(
        query_parameters=[bigquery.ScalarQueryParameter(name, "INT64", value) for name, value in params.items()]
    )
    return [tuple(row.values()) for row in client.query(sql, job_config=config).result()]


@pytest.fixture
def trips(bigquery_client: bigquery.Client, bigquery_dataset: str) -> str:
    table = bigquery_client.create_table(bigquery.Table(f"{PROJECT}.{bigquery_dataset}.trips", schema=SCHEMA))
    return f"{table.project}.{table.dataset_id}.{table.table_id}"


def test_bigquery_dataset_and_table_with_explicit_schema(bigquery_client: bigquery.Client, trips: str):
    table = bigquery_client.get_table(trips)

    # The emulator echoes the type names it was given; BigQuery may answer with the legacy ones (INTEGER, FLOAT).
    legacy = {"INTEGER": "INT64", "FLOAT": "FLOAT64"}
    assert [(f.name, legacy.get(f.field_type, f.field_type), f.mode) for f in table.schema] == [
        ("id", "INT64", "REQUIRED"),
        ("zone", "STRING", "NULLABLE"),
        ("fare", "FLOAT64", "NULLABLE"),
    ]
    assert trips.split(".")[1] in [d.dataset_id for d in bigquery_client.list_datasets()]


def test_bigquery_loads_parquet_from_a_file_and_from_gcs(
    bigquery_client: bigquery.Client, trips: str, gcs_client: storage.Client, gcs_bucket: str, tmp_path: Path
):
    truncate = bigquery.LoadJobConfig(source_format="PARQUET", write_disposition="WRITE_TRUNCATE")
    with write_parquet(tmp_path / "first.parquet", [1, 2, 3]).open("rb") as handle:
        assert bigquery_client.load_table_from_file(handle, trips, job_config=truncate).result().output_rows == 3
    blob = gcs_client.bucket(gcs_bucket).blob("lake/trips/2024-02.parquet")
    blob.upload_from_filename(write_parquet(tmp_path / "second.parquet", [4, 5]))

    append = bigquery.LoadJobConfig(source_format="PARQUET", write_disposition="WRITE_APPEND")
    bigquery_client.load_table_from_uri(f"gs://{gcs_bucket}/{blob.name}", trips, job_config=append).result()

    assert bigquery_client.get_table(trips).num_rows == 5
    assert rows(bigquery_client, f"SELECT id, zone, fare FROM `{trips}` ORDER BY id") == [
        (1, "z1", 1.5),
        (2, "z0", 3.0),
        (3, "z1", 4.5),
        (4, "z0", 6.0),
        (5, "z1", 7.5),
    ]


def load(client: bigquery.Client, table: str, path: Path) -> None:
    config = bigquery.LoadJobConfig(source_format="PARQUET", write_disposition="WRITE_TRUNCATE")
    with path.open("rb") as handle:
        client.load_table_from_file(handle, table, job_config=config).result()


def test_bigquery_query_with_a_parameter(bigquery_client: bigquery.Client, trips: str, tmp_path: Path):
    load(bigquery_client, trips, write_parquet(tmp_path / "t.parquet", [1, 2, 3, 4]))

    sql = f"SELECT zone, COUNT(*) AS n, SUM(fare) AS total FROM `{trips}` WHERE id >= @low GROUP BY zone ORDER BY zone"

    assert rows(bigquery_client, sql, low=2) == [("z0", 2, 9.0), ("z1", 1, 4.5)]


def test_bigquery_transaction_deletes_then_inserts_a_select(
    bigquery_client: bigquery.Client, trips: str, tmp_path: Path
):
    load(bigquery_client, trips, write_parquet(tmp_path / "t.parquet", [1, 2, 3]))

    bigquery_client.query(
        f"""
        BEGIN TRANSACTION;
        DELETE FROM `{trips}` WHERE zone = 'z1';
        INSERT INTO `{trips}` (id, zone, fare) SELECT id + 10, 'moved', fare FROM `{trips}` WHERE zone = 'z0';
        COMMIT TRANSACTION;
        """
    ).result()

    assert rows(bigquery_client, f"SELECT id, zone FROM `{trips}` ORDER BY id") == [(2, "z0"), (12, "moved")]


def test_bigquery_failed_transaction_rolls_back(bigquery_client: bigquery.Client, trips: str, tmp_path: Path):
    load(bigquery_client, trips, write_parquet(tmp_path / "t.parquet", [1, 2, 3]))

    with pytest.raises(Exception, match="boom"):
        bigquery_client.query(
            f"BEGIN TRANSACTION; DELETE FROM `{trips}` WHERE TRUE; SELECT ERROR('boom'); COMMIT TRANSACTION;"
        ).result()

    assert rows(bigquery_client, f"SELECT COUNT(*) FROM `{trips}`") == [(3,)]


@pytest.mark.filterwarnings("ignore:Retrieving Arrow record batches directly:PendingDeprecationWarning")
def test_bigquery_reads_arrow_over_rest_and_the_storage_read_api(
    bigquery_client: bigquery.Client, bigquery_reader: BigQueryReadClient, trips: str, tmp_path: Path
):
    load(bigquery_client, trips, write_parquet(tmp_path / "t.parquet", [1, 2, 3]))

    over_rest = bigquery_client.list_rows(trips).to_arrow(create_bqstorage_client=False)
    over_grpc = bigquery_client.list_rows(trips).to_arrow(bqstorage_client=bigquery_reader)

    assert sorted(over_rest.column("id").to_pylist()) == [1, 2, 3]
    assert sorted(over_grpc.column("id").to_pylist()) == [1, 2, 3]


def test_bigquery_env_points_a_client_at_the_emulator(bigquery_dataset: str):
    client = bigquery.Client(credentials=AnonymousCredentials())  # endpoint and project from the environment

    assert bigquery_dataset in [d.dataset_id for d in client.list_datasets()]


# --- S3 -------------------------------------------------------------------------------------------------------


def multipart_etag(data: bytes, part_size: int) -> str:
    """S3's ETag of a multipart upload: MD5 of the parts' MD5s, then '-' and the number of parts."""
    parts = [data[i : i + part_size] for i in range(0, len(data), part_size)]
    digest = hashlib.md5(b"".join(hashlib.md5(part).digest() for part in parts)).hexdigest()
    return f'"{digest}-{len(parts)}"'


def test_s3_multipart_upload_head_list_and_copy(s3_client: BaseClient, s3_bucket: str, tmp_path: Path):
    data = payload(12 * MIB)
    source = tmp_path / "big.bin"
    source.write_bytes(data)
    transfer = TransferConfig(multipart_threshold=5 * MIB, multipart_chunksize=5 * MIB)

    s3_client.upload_file(str(source), s3_bucket, "lake/big.bin", Config=transfer)

    head = s3_client.head_object(Bucket=s3_bucket, Key="lake/big.bin")
    assert head["ContentLength"] == len(data)
    assert head["ETag"] == multipart_etag(data, 5 * MIB)
    s3_client.put_object(Bucket=s3_bucket, Key="other.txt", Body=b"x")
    listed = s3_client.list_objects_v2(Bucket=s3_bucket, Prefix="lake/")
    assert [o["Key"] for o in listed["Contents"]] == ["lake/big.bin"]

    # A managed copy (UploadPartCopy here). moto 5.2's CopyObject of a multipart object keeps the source's
    # per-part CRC32 as if it were the whole object's, so botocore's checksum check fails on reading the copy.
    s3_client.copy({"Bucket": s3_bucket, "Key": "lake/big.bin"}, s3_bucket, "copy/big.bin", Config=transfer)
    s3_client.copy_object(Bucket=s3_bucket, Key="copy/other.txt", CopySource={"Bucket": s3_bucket, "Key": "other.txt"})

    assert s3_client.get_object(Bucket=s3_bucket, Key="copy/big.bin")["Body"].read() == data
    assert s3_client.get_object(Bucket=s3_bucket, Key="copy/other.txt")["Body"].read() == b"x"


def test_s3_env_alone_points_a_default_client_at_the_emulator(s3_bucket: str):
    client = boto3.client("s3")  # AWS_ENDPOINT_URL and the dummy credentials from the environment

    assert s3_bucket in [b["Name"] for b in client.list_buckets()["Buckets"]]


# --- lifecycle ------------------------------------------------------------------------------------------------


class Broken(ProcessEmulator):
    name = "broken"

    def command(self) -> list[str]:
        return ["sh", "-c", "echo cannot start here; exit 3"]

    def ready_url(self) -> str:
        return f"{self.url}/"


def test_an_emulator_that_dies_reports_its_log(tmp_path: Path):
    with pytest.raises(EmulatorError, match=r"(?s)exited with code 3.*cannot start here"):
        Broken(tmp_path).start()


def test_stop_ends_the_process(tmp_path: Path):
    server = FakeGcsServer(tmp_path)
    server.start()
    assert requests.get(server.ready_url(), timeout=5).status_code == 200

    server.stop()

    with pytest.raises(requests.ConnectionError):
        requests.get(server.ready_url(), timeout=5)
