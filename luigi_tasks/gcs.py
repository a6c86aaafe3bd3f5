"""Upload lake files to Google Cloud Storage with the official client, verified by checksum.

An object counts as uploaded only when GCS reports the same crc32c and size as the local file, so a
rerun skips objects that already hold the same bytes and replaces any that do not. The emulator is
reached through STORAGE_EMULATOR_HOST, which the official client reads itself.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from google.api_core import exceptions as gexc
from google.auth.credentials import AnonymousCredentials
from google.cloud import storage
from google.cloud.storage.retry import DEFAULT_RETRY

from luigi_tasks import config
from luigi_tasks.download import redact_urls
from luigi_tasks.errors import PipelineError
from luigi_tasks.files import fingerprints_of

CHUNK_BYTES = 8 << 20  # resumable uploads in 8 MiB chunks: a retry resends one chunk, not the file
UPLOAD_SESSIONS = 2  # a resumable session the server lost (404/410) is started again once

log = logging.getLogger(__name__)

Progress = Callable[[int, "int | None"], None]


@dataclass(frozen=True)
class Fingerprint:
    size: int
    crc32c: str  # base64, as GCS reports it


def fingerprint(path: Path) -> Fingerprint:
    fingerprints = fingerprints_of(path)
    return Fingerprint(size=fingerprints.size, crc32c=fingerprints.crc32c)


class Client(storage.Client):
    """The official client, plus `calls`: the timeout and retry every request of this module is made with."""

    def __init__(self, *, timeout: float, retry_seconds: float, **kwargs) -> None:
        super().__init__(**kwargs)
        self.calls = {"timeout": timeout, "retry": DEFAULT_RETRY.with_timeout(retry_seconds)}


def client(settings: config.gcp) -> Client:
    """The official client; anonymous against the emulator, application default credentials otherwise."""
    patience = {"timeout": settings.timeout, "retry_seconds": settings.retry_seconds}
    if os.environ.get("STORAGE_EMULATOR_HOST"):
        return Client(project=settings.project or "emulator", credentials=AnonymousCredentials(), **patience)
    return Client(project=settings.project or None, **patience)


def describe(exc: gexc.GoogleAPIError) -> str:
    """The client's error without URLs' query strings: a resumable upload's session id is a credential."""
    text = exc.message if isinstance(exc, gexc.GoogleAPICallError) else str(exc)
    return redact_urls(text)


def bucket_or_error(gcs: Client, name: str) -> storage.Bucket:
    try:
        bucket = gcs.lookup_bucket(name, **gcs.calls)
    except gexc.GoogleAPIError as exc:
        raise PipelineError(f"GCS bucket {name}: {describe(exc)}") from None
    if bucket is None:
        raise PipelineError(f"GCS bucket {name} does not exist (or this account cannot see it): create it first")
    return bucket


def stored_fingerprints(gcs: Client, bucket: str, prefix: str) -> dict[str, Fingerprint]:
    """Every object under a prefix with its size and crc32c: one listing (paged by the client)."""
    try:
        return {
            blob.name: Fingerprint(size=blob.size, crc32c=blob.crc32c)
            for blob in gcs.list_blobs(bucket_or_error(gcs, bucket), prefix=prefix, **gcs.calls)
        }
    except gexc.GoogleAPIError as exc:
        raise PipelineError(f"listing gs://{bucket}/{prefix}: {describe(exc)}") from None


def get_blob(gcs: Client, bucket: str, name: str) -> storage.Blob | None:
    try:
        return bucket_or_error(gcs, bucket).get_blob(name, **gcs.calls)
    except gexc.GoogleAPIError as exc:
        raise PipelineError(f"reading gs://{bucket}/{name}: {describe(exc)}") from None


def upload_file(gcs: Client, path: Path, bucket: str, name: str, *, progress: Progress | None = None) -> bool:
    """Put `path` at gs://bucket/name unless it already holds the same bytes; returns True if it uploaded."""
    local = fingerprint(path)
    existing = get_blob(gcs, bucket, name)
    if existing is not None and Fingerprint(existing.size, existing.crc32c) == local:
        return False
    if progress:
        progress(0, local.size)
    blob = bucket_or_error(gcs, bucket).blob(name, chunk_size=CHUNK_BYTES)
    for session in range(1, UPLOAD_SESSIONS + 1):
        try:
            # The client checks the crc32c of what it sent against what GCS computed, and fails if they differ.
            blob.upload_from_filename(
                str(path), checksum="crc32c", content_type="application/vnd.apache.parquet", **gcs.calls
            )
            break
        except gexc.GoogleAPIError as exc:
            # 404 or 410 once the bucket is known to exist: the server lost the upload session.
            if getattr(exc, "code", None) not in (404, 410) or session == UPLOAD_SESSIONS:
                raise PipelineError(f"uploading {path} to gs://{bucket}/{name}: {describe(exc)}") from None
            log.warning("gs://%s/%s: the server lost the upload session; uploading again", bucket, name)
    blob = get_blob(gcs, bucket, name)
    if blob is None:
        raise PipelineError(f"gs://{bucket}/{name} is missing right after its upload")
    if Fingerprint(blob.size, blob.crc32c) != local:
        raise PipelineError(
            f"gs://{bucket}/{name} holds {blob.size:,} bytes with crc32c {blob.crc32c} after the upload; "
            f"{path} has {local.size:,} bytes with crc32c {local.crc32c}"
        )
    if progress:
        progress(local.size, local.size)
    return True
