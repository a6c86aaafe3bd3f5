"""Streaming download of a source file, checked before it counts as done, and the source's validators.

The bytes go to a part file in 1 MiB chunks (memory stays flat) and become the destination only
when the payload is whole and is what its URL promises: gzip that decompresses to its end, Parquet
with a readable footer, CSV whose header the catalogue knows, as many bytes as Content-Length said.
An HTML or XML error page is an error even when it comes with status 200.

A download returns the file's validators (ETag, Last-Modified, size); `probe` asks for them alone with a
HEAD, so a file republished at its URL is told from the one fetched before without downloading either.
A file that is not there is a 404, or a 403 whose body is S3's AccessDenied (or NoSuchKey) error, as
CloudFront answers; any other 403 is an error of its own.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import datetime as dt
import email.utils
import functools
import json
import logging
import re
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pyarrow.parquet as pq
import requests
import urllib3
from isal import isal_zlib  # ISA-L's inflate: 40% of zlib's CPU for the gzip check

from luigi_tasks.errors import NotPublished, PipelineError, RetryableSourceError, SourceError
from luigi_tasks.files import atomic_path

log = logging.getLogger(__name__)

CHUNK_BYTES = 1 << 20
_HEADER_LIMIT = 1 << 20  # a header line longer than this is not a TLC header
_GZIP_MAGIC = b"\x1f\x8b"
_PARQUET_MAGIC = b"PAR1"
_LINE_END = re.compile(rb"[\r\n]")  # CR-only files exist besides LF and CRLF ones
# A server may ask for a pause (Retry-After on 429 or 503); one asking for more than this is not waited for.
RETRY_AFTER_CAP = 300.0

Progress = Callable[[int, "int | None"], None]
HeaderCheck = Callable[[Sequence[str]], None]


def redact_url(url: str) -> str:
    """The URL without credentials or query string, which may carry signatures or tokens."""
    parts = urlsplit(url)
    netloc = parts.hostname or ""
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


_SIGNED = re.compile(r"(?i)\b(sig|signature|accountkey|sharedaccesssignature)=[^&;\s'\"]+")


def redact_urls(text: str) -> str:
    """A message with every URL in it redacted, and any signature or key written as name=value masked."""
    text = re.sub(r"https?://\S+", lambda url: redact_url(url.group(0).rstrip(":,)'\"")), text)
    return _SIGNED.sub(lambda found: f"{found.group(1)}=***", text)


def payload_kind(url_or_path: str) -> str:
    """'csv.gz', 'csv' or 'parquet', from the file name's ending."""
    name = urlsplit(str(url_or_path)).path.lower()
    for kind in ("csv.gz", "parquet", "csv"):
        if name.endswith("." + kind):
            return kind
    raise SourceError(f"{redact_url(str(url_or_path))}: cannot tell the format; expected .csv.gz, .csv or .parquet")


GZIP_TWICE = (
    "is gzip data inside gzip data (compressed twice, e.g. by a server): decompress it once more, or serve it"
    " compressed once"
)


def is_gzip(head: bytes) -> bool:
    """Whether bytes start like gzip data (some files named .csv are)."""
    return head.startswith(_GZIP_MAGIC)


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
        self._gunzip = isal_zlib.decompressobj(wbits=31) if kind == "csv.gz" else None
        self._gzip_whole = False

    def _fail(self, problem: str) -> SourceError:
        return SourceError(f"{self.label}: {self.url} {problem}")

    def feed(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if not self._magic_checked:
            # The first bytes wait until the magic says how to read them (gzip at a .csv URL is gzip).
            self._first += chunk
            if len(self._first) < 4:
                return
            self._check_magic()
            chunk, self._first = self._first, self._first[:256]
        self._take(chunk)

    def _take(self, chunk: bytes) -> None:
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
        if self.kind == "csv" and is_gzip(self._first):
            self._gunzip = isal_zlib.decompressobj(wbits=31)

    def _inflate(self, chunk: bytes) -> None:
        assert self._gunzip is not None
        data = chunk
        while data:
            if self._gzip_whole and data[0] == 0:
                # Zeros after a whole member are padding, as gunzip reads them (tape blocks, some servers); after
                # padding, nothing else may follow.
                if data.count(0) != len(data):
                    raise self._fail("is corrupt gzip data (bytes other than zeros after the zero padding at its end)")
                return
            try:
                out = self._gunzip.decompress(data)
            except isal_zlib.error as exc:
                raise self._fail(f"is corrupt gzip data ({exc})") from None
            if not self._header_done:
                self._take_header_text(out)
            self._gzip_whole = self._gunzip.eof
            data = self._gunzip.unused_data
            if self._gunzip.eof:
                # Concatenated gzip members are one valid file: go on with the next member.
                self._gunzip = isal_zlib.decompressobj(wbits=31)

    def _take_header_text(self, text: bytes) -> None:
        self._text += text
        newline = _LINE_END.search(self._text)
        if newline is None:
            if len(self._text) > _HEADER_LIMIT:
                raise self._fail("has no CSV header line in its first MiB")
            return
        if self._gunzip is not None and is_gzip(self._text[:2]):
            raise self._fail(GZIP_TWICE)
        self._header_done = True
        header = _parse_header(self._text[: newline.start()])
        self._text = b""
        if self.check_header:
            self.check_header(header)

    def finish(self, path: Path) -> None:
        if self.size == 0:
            raise self._fail("returned an empty file (0 bytes)")
        if not self._magic_checked:
            self._check_magic()
            self._take(self._first)
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


@dataclasses.dataclass(frozen=True)
class SourceVersion:
    """A file's validators as the source sends them: ETag, Last-Modified and its size in bytes (as sent).

    What tells a file republished at its URL from the one fetched before, without downloading either.
    """

    etag: str | None = None
    last_modified: str | None = None
    size: int | None = None

    @classmethod
    def of(cls, headers: Mapping[str, str], size: int | None = None) -> SourceVersion:
        """The validators in a response's headers; `size` when known otherwise (the bytes received)."""
        length = headers.get("Content-Length", "")
        return cls(headers.get("ETag"), headers.get("Last-Modified"), size if size is not None else
                   int(length) if length.isdigit() else None)  # fmt: skip

    def to_json(self) -> bytes:
        return json.dumps(dataclasses.asdict(self), sort_keys=True).encode()

    @classmethod
    def from_json(cls, data: bytes | None) -> SourceVersion | None:
        """The validators recorded in `data`, or None (nothing recorded, or not a record of them)."""
        try:
            return cls(**json.loads(data)) if data else None
        except (ValueError, TypeError):
            return None

    def change_from(self, recorded: SourceVersion | None, recorded_bytes: int) -> str | None:
        """How the file the source has now differs from the one recorded ('ETag "a" -> "b"'); None if it is the same.

        The ETags decide when both sides have one; else Last-Modified and the size; a file recorded without
        validators (fetched before they were recorded) has changed only if its size differs from `recorded_bytes`.
        """
        if recorded is not None and recorded.etag and self.etag:
            return None if recorded.etag == self.etag else f"ETag {recorded.etag} -> {self.etag}"
        if recorded is not None and recorded.last_modified and self.last_modified:
            if recorded.last_modified != self.last_modified:
                return f"Last-Modified {recorded.last_modified} -> {self.last_modified}"
            recorded_bytes = recorded.size if recorded.size is not None else recorded_bytes
        if self.size is not None and self.size != recorded_bytes:
            return f"size {recorded_bytes:,} -> {self.size:,} bytes"
        return None


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
) -> SourceVersion:
    """Download `url` to `dest` atomically; returns the file's validators, with the size as sent.

    Lost connections, timeouts, short reads, HTTP 5xx and 429 are retried with exponential backoff, or after
    the pause the server asks for (Retry-After, up to RETRY_AFTER_CAP); a file that is not there, a host name that
    does not resolve and a TLS certificate that does not verify are not: another attempt cannot fix them.
    """
    kind = payload_kind(url)
    fetch = functools.partial(_fetch_once, url, dest, kind=kind, label=label, check_header=check_header,
                              timeout=timeout, progress=progress)  # fmt: skip
    return _retried(fetch, retries=retries, retry_backoff=retry_backoff)


def probe(
    url: str,
    *,
    label: str,
    retries: int = 4,
    retry_backoff: float = 2.0,
    timeout: float = 60.0,
    session: requests.Session | None = None,
) -> SourceVersion:
    """The validators of the file at `url` now, without its bytes: one HEAD, retried like a download.

    NotPublished when it is not there. A server that refuses HEAD (405, 501) is asked with a GET whose body is
    not read; so is a 403, whose body says whether the file is missing (S3's AccessDenied) or access is refused.
    """
    http = session or requests.Session()
    ask = functools.partial(_probe_once, url, label=label, timeout=timeout, http=http)
    try:
        return _retried(ask, retries=retries, retry_backoff=retry_backoff)
    finally:
        if session is None:
            http.close()


PROBES_AT_ONCE = 16  # HEAD requests in flight at once when many files are asked about


def probe_many(
    urls: Mapping[object, tuple[str, str]], *, workers: int = PROBES_AT_ONCE, **options: float
) -> dict[object, SourceVersion | NotPublished]:
    """`probe` for many files at once (key -> (url, label)), at most `workers` requests in flight, each thread with
    its own kept-alive connection. A file that is not there is its NotPublished; any other failure is raised."""
    if not urls:
        return {}
    sessions: list[requests.Session] = []
    local = threading.local()

    def ask(item: tuple[object, tuple[str, str]]) -> tuple[object, SourceVersion | NotPublished]:
        key, (url, label) = item
        if not hasattr(local, "session"):
            local.session = requests.Session()
            sessions.append(local.session)
        try:
            return key, probe(url, label=label, session=local.session, **options)
        except NotPublished as absent:
            return key, absent

    try:
        with ThreadPoolExecutor(max_workers=min(workers, len(urls))) as pool:
            return dict(pool.map(ask, urls.items()))
    finally:
        for session in sessions:
            session.close()


def _retried(attempt: Callable[[], SourceVersion], *, retries: int, retry_backoff: float) -> SourceVersion:
    """`attempt()` again after a transient failure (RetryableSourceError), with backoff or the pause asked for."""
    tries = 0
    while True:
        try:
            return attempt()
        except RetryableSourceError as exc:
            if tries >= retries:
                raise SourceError(f"{exc}; gave up after {tries + 1} attempts") from None
            delay = exc.retry_after if exc.retry_after is not None else retry_backoff * 2**tries
            tries += 1
            log.warning("%s; retry %d of %d in %.1f s", exc, tries, retries, delay)
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
) -> SourceVersion:
    shown = redact_url(url)
    check = PayloadCheck(kind, label=label, url=shown, check_header=check_header)
    with (
        _requesting(url, label, timeout, "downloading"),
        requests.get(url, stream=True, timeout=(timeout, timeout)) as response,
    ):
        _check_answer(response, label, shown)
        expected = response.headers.get("Content-Length")
        total = int(expected) if expected and expected.isdigit() else None
        # Keep what the URL names: a .csv.gz or .parquet as published, even if the server says it added
        # Content-Encoding (S3 objects often carry it), but a plain .csv decoded from it.
        decode = kind == "csv"
        with atomic_path(dest) as part, open(part, "wb") as out:
            for chunk in response.raw.stream(CHUNK_BYTES, decode_content=decode):
                check.feed(chunk)
                _write(out, chunk, dest, label)
                if progress:
                    progress(response.raw.tell(), total)
            received = response.raw.tell()  # bytes on the wire, which Content-Length counts
            if total is not None and received != total:
                raise RetryableSourceError(f"{label}: {shown} ended after {received:,} of {total:,} bytes")
            out.flush()
            check.finish(part)
        return SourceVersion.of(response.headers, size=received)


def _probe_once(url: str, *, label: str, timeout: float, http: requests.Session) -> SourceVersion:
    shown = redact_url(url)
    with _requesting(url, label, timeout, "asking about"):
        response = http.head(url, allow_redirects=True, timeout=(timeout, timeout))
        if response.status_code not in (403, 405, 501):
            _check_answer(response, label, shown)
            return SourceVersion.of(response.headers)
        with http.get(url, stream=True, timeout=(timeout, timeout)) as response:  # the body is read only for a 403
            _check_answer(response, label, shown)
            return SourceVersion.of(response.headers)


@contextlib.contextmanager
def _requesting(url: str, label: str, timeout: float, doing: str) -> Iterator[None]:
    """The failures of a request as our errors: one line naming the host and the cause, never the URL's secrets;
    RetryableSourceError for those another attempt may fix."""
    shown = redact_url(url)
    try:
        yield
    except urllib3.exceptions.DecodeError:
        raise SourceError(f"{label}: {shown} sent a body that does not decode as its Content-Encoding says") from None
    except (requests.ConnectionError, requests.Timeout, urllib3.exceptions.HTTPError) as exc:
        problem, transient = _connection_problem(exc, url, timeout)
        error = RetryableSourceError if transient else SourceError
        raise error(f"{label}: {doing} {shown} failed: {problem}") from None
    except requests.RequestException as exc:
        raise SourceError(f"{label}: {doing} {shown} failed: {type(exc).__name__}") from None


_MISSING_KEY = (b"<Code>AccessDenied</Code>", b"<Code>NoSuchKey</Code>")  # S3's answers for a key that is not there
_ERROR_BODY_READ = 1 << 16  # bytes of an error page read at most


def _check_answer(response: requests.Response, label: str, shown: str) -> None:
    """Nothing for a 200; else the error the answer means (NotPublished when the file is not there)."""
    status = response.status_code
    if status == 200:
        return
    if status == 404 or (status == 403 and _says_missing(response)):
        # S3 and CloudFront answer 403 with an AccessDenied body for a key that does not exist.
        raise NotPublished(f"{label} is not published at {shown} (HTTP {status})")
    if status >= 500 or status == 429:
        raise _busy(response, f"{label}: {shown} answered HTTP {status}")
    raise SourceError(f"{label}: {shown} answered HTTP {status}")


def _says_missing(response: requests.Response) -> bool:
    body = next(response.iter_content(_ERROR_BODY_READ), b"")
    return any(code in body for code in _MISSING_KEY)


def _busy(response: requests.Response, message: str) -> SourceError:
    """A 5xx or 429: retried after the pause the server asks for, unless that pause is beyond the cap."""
    wait = retry_after_seconds(response.headers.get("Retry-After"))
    if wait is not None and wait > RETRY_AFTER_CAP:
        return SourceError(
            f"{message} and asks to wait {wait:,.0f} s, longer than the {RETRY_AFTER_CAP:.0f} s a download "
            "waits: run it again later"
        )
    return RetryableSourceError(message, retry_after=wait)


def retry_after_seconds(value: str | None) -> float | None:
    """Seconds from now that a Retry-After header asks for (it is a number of seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None  # not a value the standard allows: the usual backoff then
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.timezone.utc)
    return max(0.0, (when - dt.datetime.now(dt.timezone.utc)).total_seconds())


def _causes(exc: BaseException) -> list[BaseException]:
    """The exception and every exception inside it (requests wraps urllib3, which wraps socket and ssl)."""
    found: list[BaseException] = []
    pending = [exc]
    while pending:
        current = pending.pop(0)
        if current in found:
            continue
        found.append(current)
        inner = [current.__cause__, current.__context__, getattr(current, "reason", None), *current.args]
        pending += [e for e in inner if isinstance(e, BaseException)]
    return found


def _connection_problem(exc: BaseException, url: str, timeout: float) -> tuple[str, bool]:
    """What went wrong with the connection, in words naming the host, and whether another attempt may help."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    causes = _causes(exc)

    def found(*kinds: type) -> BaseException | None:
        return next((e for e in causes if isinstance(e, kinds)), None)

    if found(socket.gaierror):
        return f"the host name {host} cannot be resolved (offline, or a wrong host in the URL?)", False
    certificate = found(ssl.SSLCertVerificationError)
    if certificate is not None:
        reason = getattr(certificate, "verify_message", "") or "verification failed"
        return f"the TLS certificate of {host} cannot be verified ({reason})", False
    if found(ssl.SSLError):
        return f"the TLS handshake with {host}:{port} failed", True
    if found(ConnectionRefusedError):
        return f"connection refused by {host}:{port}", True
    if found(requests.Timeout, urllib3.exceptions.TimeoutError, TimeoutError):
        return f"timed out: {host}:{port} sent nothing for {timeout:g} s", True
    if found(ConnectionResetError):
        return f"connection reset by {host}:{port}", True
    return f"the connection to {host}:{port} was lost ({type(causes[-1]).__name__})", True


def _write(out, chunk: bytes, dest: Path, label: str) -> None:
    try:
        out.write(chunk)
    except OSError as exc:
        raise PipelineError(f"{label}: cannot write {dest}: {exc.strerror}") from None
