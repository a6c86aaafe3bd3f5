"""Streaming download of a source file, checked before it counts as done.

The bytes go to a part file in 1 MiB chunks (memory stays flat) and become the destination only
when the payload is whole and is what its URL promises: gzip that decompresses to its end, Parquet
with a readable footer, CSV whose header the catalogue knows, as many bytes as Content-Length said.
An HTML or XML error page is an error even when it comes with status 200.
"""

from __future__ import annotations

import csv
import logging
import time
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pyarrow.parquet as pq
import requests
import urllib3

from luigi_tasks.errors import NotPublished, PipelineError, RetryableSourceError, SourceError
from luigi_tasks.files import atomic_path

log = logging.getLogger(__name__)

CHUNK_BYTES = 1 << 20
_HEADER_LIMIT = 1 << 20  # a header line longer than this is not a TLC header
_GZIP_MAGIC = b"\x1f\x8b"
_PARQUET_MAGIC = b"PAR1"

Progress = Callable[[int, "int | None"], None]
HeaderCheck = Callable[[Sequence[str]], None]


def redact_url(url: str) -> str:
    """The URL without credentials or query string, which may carry signatures or tokens."""
    parts = urlsplit(url)
    netloc = parts.hostname or ""
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def payload_kind(url_or_path: str) -> str:
    """'csv.gz', 'csv' or 'parquet', from the file name's ending."""
    name = urlsplit(str(url_or_path)).path.lower()
    for kind in ("csv.gz", "parquet", "csv"):
        if name.endswith("." + kind):
            return kind
    raise SourceError(f"{redact_url(str(url_or_path))}: cannot tell the format; expected .csv.gz, .csv or .parquet")


def _describe_page(head: bytes) -> str:
    text = " ".join(head[:160].decode("utf-8", "replace").split())
    kind = "an XML error page" if text.startswith("<?xml") or "<Error>" in text else "an HTML page"
    return f"{kind} ({text[:120]!r})"


class PayloadCheck:
    """Validates a payload as it streams past, so a bad one is caught before it is kept."""

    def __init__(self, kind: str, *, label: str, url: str, check_header: HeaderCheck | None) -> None:
        self.kind = kind
        self.label = label
        self.url = url
        self.check_header = check_header
        self.size = 0
        self._first = b""  # the start of the payload, for its magic bytes or an error page's text
        self._magic_checked = False
        self._text = b""  # decompressed start of a CSV, until its header line is complete
        self._header_done = check_header is None or kind == "parquet"
        self._gunzip = zlib.decompressobj(wbits=31) if kind == "csv.gz" else None
        self._gzip_whole = False

    def _fail(self, problem: str) -> SourceError:
        return SourceError(f"{self.label}: {self.url} {problem}")

    def feed(self, chunk: bytes) -> None:
        if not self._magic_checked:
            self._first = (self._first + chunk)[:256]
            if len(self._first) >= 4:
                self._check_magic()
        self.size += len(chunk)
        if self._gunzip is not None:
            self._inflate(chunk)
        elif self.kind == "csv" and not self._header_done:
            self._take_header_text(chunk)

    def _check_magic(self) -> None:
        self._magic_checked = True
        head = self._first.lstrip()
        if head.startswith(b"<"):
            raise self._fail(f"returned {_describe_page(self._first)}, not a {self.kind} file")
        expected = {"csv.gz": _GZIP_MAGIC, "parquet": _PARQUET_MAGIC}.get(self.kind)
        if expected and not self._first.startswith(expected):
            raise self._fail(f"is not {self.kind} data (starts with {self._first[:8]!r})")

    def _inflate(self, chunk: bytes) -> None:
        assert self._gunzip is not None
        data = chunk
        while data:
            try:
                out = self._gunzip.decompress(data)
            except zlib.error as exc:
                raise self._fail(f"is corrupt gzip data ({exc})") from None
            if not self._header_done:
                self._take_header_text(out)
            self._gzip_whole = self._gunzip.eof
            data = self._gunzip.unused_data
            if self._gunzip.eof:
                # Concatenated gzip members are one valid file: go on with the next member.
                self._gunzip = zlib.decompressobj(wbits=31)

    def _take_header_text(self, text: bytes) -> None:
        self._text += text
        newline = self._text.find(b"\n")
        if newline < 0:
            if len(self._text) > _HEADER_LIMIT:
                raise self._fail("has no CSV header line in its first MiB")
            return
        self._header_done = True
        header = _parse_header(self._text[:newline])
        self._text = b""
        if self.check_header:
            self.check_header(header)

    def finish(self, path: Path) -> None:
        if self.size == 0:
            raise self._fail("returned an empty file (0 bytes)")
        if not self._magic_checked:
            self._check_magic()
        if self._gunzip is not None and not self._gzip_whole:
            raise self._fail("is a truncated gzip file: the data ends before the gzip end-of-stream marker")
        if self.kind == "parquet":
            try:
                names = pq.read_schema(path).names
            except Exception as exc:  # pyarrow raises several types for a bad footer
                raise self._fail(f"is not a readable Parquet file ({exc})") from None
            if self.check_header:
                self.check_header(names)
        elif not self._header_done:
            # A CSV with no newline at all: the whole text must be the header.
            self._header_done = True
            if self.check_header:
                self.check_header(_parse_header(self._text))


def _parse_header(line: bytes) -> list[str]:
    text = line.decode("utf-8-sig", "replace").rstrip("\r\n")
    return next(csv.reader([text]), [])


def download(
    url: str,
    dest: Path,
    *,
    label: str,
    check_header: HeaderCheck | None = None,
    retries: int = 4,
    retry_backoff: float = 2.0,
    timeout: float = 60.0,
    progress: Progress | None = None,
) -> int:
    """Download `url` to `dest` atomically; returns the number of bytes kept.

    Connection errors, short reads and HTTP 5xx are retried with exponential backoff; a 404 is not.
    """
    kind = payload_kind(url)
    attempt = 0
    while True:
        try:
            return _fetch_once(
                url,
                dest,
                kind=kind,
                label=label,
                check_header=check_header,
                timeout=timeout,
                progress=progress,
            )
        except RetryableSourceError as exc:
            if attempt >= retries:
                raise SourceError(f"{exc}; gave up after {attempt + 1} attempts") from None
            delay = retry_backoff * 2**attempt
            attempt += 1
            log.warning("%s; retry %d of %d in %.1f s", exc, attempt, retries, delay)
            time.sleep(delay)


def _fetch_once(
    url: str,
    dest: Path,
    *,
    kind: str,
    label: str,
    check_header: HeaderCheck | None,
    timeout: float,
    progress: Progress | None,
) -> int:
    shown = redact_url(url)
    check = PayloadCheck(kind, label=label, url=shown, check_header=check_header)
    try:
        with requests.get(url, stream=True, timeout=(timeout, timeout)) as response:
            if response.status_code in (403, 404):
                # S3 and CloudFront answer 403 for a key that does not exist.
                raise NotPublished(f"{label} is not published at {shown} (HTTP {response.status_code})")
            if response.status_code >= 500:
                raise RetryableSourceError(f"{label}: {shown} answered HTTP {response.status_code}")
            if response.status_code != 200:
                raise SourceError(f"{label}: {shown} answered HTTP {response.status_code}")
            expected = response.headers.get("Content-Length")
            total = int(expected) if expected and expected.isdigit() else None
            with atomic_path(dest) as part, open(part, "wb") as out:
                # raw.stream keeps the bytes as published even if the server adds Content-Encoding.
                for chunk in response.raw.stream(CHUNK_BYTES, decode_content=False):
                    check.feed(chunk)
                    _write(out, chunk, dest, label)
                    if progress:
                        progress(check.size, total)
                if total is not None and check.size != total:
                    raise RetryableSourceError(f"{label}: {shown} ended after {check.size:,} of {total:,} bytes")
                out.flush()
                check.finish(part)
    except (requests.ConnectionError, requests.Timeout, urllib3.exceptions.HTTPError) as exc:
        raise RetryableSourceError(f"{label}: downloading {shown} failed: {type(exc).__name__}") from None
    except requests.RequestException as exc:
        raise SourceError(f"{label}: downloading {shown} failed: {type(exc).__name__}") from None
    return check.size


def _write(out, chunk: bytes, dest: Path, label: str) -> None:
    try:
        out.write(chunk)
    except OSError as exc:
        raise PipelineError(f"{label}: cannot write {dest}: {exc.strerror}") from None
