"""S3: mirror lake files with boto3 (multipart, verified by ETag), and stream S3 objects into GCS.

boto3 finds the endpoint (AWS_ENDPOINT_URL, for an emulator) and the credentials through its usual
chain; nothing here names a key. An S3 object's ETag is the MD5 of its bytes, or for a multipart
upload the MD5 of the parts' MD5s and the part count: computing it locally with the same part size
proves the stored bytes are ours.
"""

from __future__ import annotations

import base64
import logging
from pathlib import Path
from typing import IO

import boto3
import google_crc32c
from boto3.s3.transfer import TransferConfig
from botocore.exceptions import BotoCoreError, ClientError
from google.api_core import exceptions as gexc

from luigi_tasks.errors import PipelineError
from luigi_tasks.files import S3_PART_BYTES, fingerprints_of

log = logging.getLogger(__name__)

PART_BYTES = S3_PART_BYTES
_TRANSFER = TransferConfig(multipart_threshold=PART_BYTES, multipart_chunksize=PART_BYTES)


def client():
    return boto3.client("s3")


def expected_etag(path: Path) -> str:
    """The ETag S3 gives `path` uploaded with parts of PART_BYTES (a single PUT below that size)."""
    return fingerprints_of(path).s3_etag


def _error(action: str, bucket: str, key: str, exc: Exception) -> PipelineError:
    if isinstance(exc, ClientError):
        code = exc.response.get("Error", {}).get("Code", "")
        if code in ("NoSuchBucket", "404") and not key:
            return PipelineError(f"S3 bucket {bucket} does not exist (or this account cannot see it)")
        if code in ("NoSuchKey", "404"):
            return PipelineError(f"s3://{bucket}/{key} does not exist (or this account cannot see it)")
        return PipelineError(f"{action} s3://{bucket}/{key}: {code or 'error'}")
    return PipelineError(f"{action} s3://{bucket}/{key}: {type(exc).__name__}")


def check_bucket(s3, bucket: str) -> None:
    try:
        s3.head_bucket(Bucket=bucket)
    except (ClientError, BotoCoreError) as exc:
        raise _error("reading", bucket, "", exc) from None


def stored_etags(s3, bucket: str, prefix: str) -> dict[str, tuple[int, str]]:
    """Every object under a prefix with its size and ETag: one listing (paged)."""
    check_bucket(s3, bucket)
    found = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Contents", []):
            found[item["Key"]] = (item["Size"], item["ETag"].strip('"'))
    return found


def head_object(s3, bucket: str, key: str) -> dict:
    try:
        return s3.head_object(Bucket=bucket, Key=key)
    except (ClientError, BotoCoreError) as exc:
        raise _error("reading", bucket, key, exc) from None


def abort_unfinished_uploads(s3, bucket: str, key: str) -> int:
    """Abort multipart uploads of `key` that never completed (a run killed mid-upload leaves one, and S3
    keeps billing its parts until it is aborted). One task uploads a key at a time, so none is live."""
    pages = s3.get_paginator("list_multipart_uploads").paginate(Bucket=bucket, Prefix=key)
    unfinished = [upload for page in pages for upload in page.get("Uploads", []) if upload["Key"] == key]
    for upload in unfinished:
        s3.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload["UploadId"])
    if unfinished:
        log.info("s3://%s/%s: aborted %d unfinished multipart upload(s)", bucket, key, len(unfinished))
    return len(unfinished)


def upload_file(s3, path: Path, bucket: str, key: str) -> bool:
    """Put `path` at s3://bucket/key unless it already holds the same bytes; returns True if it uploaded."""
    check_bucket(s3, bucket)
    etag = expected_etag(path)
    size = path.stat().st_size
    try:
        head = s3.head_object(Bucket=bucket, Key=key)
        if head["ContentLength"] == size and head["ETag"].strip('"') == etag:
            return False
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") not in ("404", "NoSuchKey"):
            raise _error("reading", bucket, key, exc) from None
    try:
        abort_unfinished_uploads(s3, bucket, key)
        s3.upload_file(str(path), bucket, key, Config=_TRANSFER)
        head = s3.head_object(Bucket=bucket, Key=key)
    except (ClientError, BotoCoreError) as exc:
        raise _error("uploading to", bucket, key, exc) from None
    if head["ContentLength"] != size or head["ETag"].strip('"') != etag:
        raise PipelineError(
            f"s3://{bucket}/{key} has ETag {head['ETag']} and {head['ContentLength']:,} bytes after the upload; "
            f"{path} should give {etag} and {size:,}"
        )
    return True


class _Checksummed:
    """A read()-able stream that computes the crc32c of what passes through it."""

    def __init__(self, stream: IO[bytes]) -> None:
        self.stream = stream
        self.crc32c = google_crc32c.Checksum()
        self.size = 0

    def read(self, size: int = -1) -> bytes:
        chunk = self.stream.read(size)
        self.crc32c.update(chunk)
        self.size += len(chunk)
        return chunk

    @property
    def crc32c_b64(self) -> str:
        return base64.b64encode(self.crc32c.digest()).decode()


def copy_to_gcs(s3, gcs_client, s3_bucket: str, key: str, gcs_bucket: str, name: str) -> bool:
    """Stream s3://s3_bucket/key into gs://gcs_bucket/name, verified; skipped when GCS already has that version.

    The GCS object carries the S3 ETag it was copied from, so a rerun compares ETags and copies nothing
    unless the S3 object changed. Returns True if it copied.
    """
    from luigi_tasks import gcs

    head = head_object(s3, s3_bucket, key)
    etag = head["ETag"].strip('"')
    existing = gcs.get_blob(gcs_client, gcs_bucket, name)
    if (
        existing is not None
        and existing.size == head["ContentLength"]
        and (existing.metadata or {}).get("s3-etag") == etag
    ):
        return False
    body = s3.get_object(Bucket=s3_bucket, Key=key, IfMatch=head["ETag"])["Body"]
    stream = _Checksummed(body)
    blob = gcs.bucket_or_error(gcs_client, gcs_bucket).blob(name, chunk_size=gcs.CHUNK_BYTES)
    blob.metadata = {"s3-etag": etag, "s3-source": f"s3://{s3_bucket}/{key}"}
    try:
        blob.upload_from_file(stream, size=head["ContentLength"], checksum="crc32c", **gcs_client.calls)
        blob.reload(**gcs_client.calls)
    except gexc.GoogleAPIError as exc:
        raise PipelineError(
            f"copying s3://{s3_bucket}/{key} to gs://{gcs_bucket}/{name}: {gcs.describe(exc)}"
        ) from None
    if blob.size != stream.size or blob.crc32c != stream.crc32c_b64 or stream.size != head["ContentLength"]:
        raise PipelineError(
            f"gs://{gcs_bucket}/{name} does not match s3://{s3_bucket}/{key} after the copy "
            f"({blob.size:,} bytes, crc32c {blob.crc32c}; read {stream.size:,} bytes, crc32c {stream.crc32c_b64})"
        )
    return True
