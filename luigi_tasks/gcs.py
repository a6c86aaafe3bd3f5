"""Upload lake files to Google Cloud Storage with the official client, verified by checksum.

An object counts as uploaded only when GCS reports the same crc32c and size as the local file, so a
rerun skips objects that already hold the same bytes and replaces any that do not. The emulator is
reached through STORAGE_EMULATOR_HOST, which the official client reads itself.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import google_crc32c
from google.api_core import exceptions as gexc
from google.auth.credentials import AnonymousCredentials
from google.cloud import storage

from luigi_tasks.errors import PipelineError

CHUNK_BYTES = 8 << 20  # resumable uploads in 8 MiB chunks: a retry resends one chunk, not the file

Progress = Callable[[int, "int | None"], None]


@dataclass(frozen=True)
class Fingerprint:
    size: int
    crc32c: str  # base64, as GCS reports it


def fingerprint(path: Path) -> Fingerprint:
    checksum = google_crc32c.Checksum()
    with open(path, "rb") as source:
        while chunk := source.read(1 << 20):
            checksum.update(chunk)
    return Fingerprint(size=path.stat().st_size, crc32c=base64.b64encode(checksum.digest()).decode())


def client(project: str) -> storage.Client:
    """The official client; anonymous against the emulator, application default credentials otherwise."""
    if os.environ.get("STORAGE_EMULATOR_HOST"):
        return storage.Client(project=project or "emulator", credentials=AnonymousCredentials())
    return storage.Client(project=project or None)


def bucket_or_error(gcs: storage.Client, name: str) -> storage.Bucket:
    try:
        bucket = gcs.lookup_bucket(name)
    except gexc.GoogleAPICallError as exc:
        raise PipelineError(f"GCS bucket {name}: {exc.message}") from None
    if bucket is None:
        raise PipelineError(f"GCS bucket {name} does not exist (or this account cannot see it): create it first")
    return bucket


def stored_fingerprints(gcs: storage.Client, bucket: str, prefix: str) -> dict[str, Fingerprint]:
    """Every object under a prefix with its size and crc32c: one listing (paged by the client)."""
    return {
        blob.name: Fingerprint(size=blob.size, crc32c=blob.crc32c)
        for blob in gcs.list_blobs(bucket_or_error(gcs, bucket), prefix=prefix)
    }


def upload_file(gcs: storage.Client, path: Path, bucket: str, name: str, *, progress: Progress | None = None) -> bool:
    """Put `path` at gs://bucket/name unless it already holds the same bytes; returns True if it uploaded."""
    local = fingerprint(path)
    target = bucket_or_error(gcs, bucket)
    existing = target.get_blob(name)
    if existing is not None and Fingerprint(existing.size, existing.crc32c) == local:
        return False
    blob = target.blob(name, chunk_size=CHUNK_BYTES)
    if progress:
        progress(0, local.size)
    try:
        # The client checks the crc32c of what it sent against what GCS computed, and fails if they differ.
        blob.upload_from_filename(str(path), checksum="crc32c", content_type="application/vnd.apache.parquet")
    except gexc.GoogleAPICallError as exc:
        raise PipelineError(f"uploading {path} to gs://{bucket}/{name}: {exc.message}") from None
    blob.reload()
    if Fingerprint(blob.size, blob.crc32c) != local:
        raise PipelineError(
            f"gs://{bucket}/{name} holds {blob.size:,} bytes with crc32c {blob.crc32c} after the upload; "
            f"{path} has {local.size:,} bytes with crc32c {local.crc32c}"
        )
    if progress:
        progress(local.size, local.size)
    return True
