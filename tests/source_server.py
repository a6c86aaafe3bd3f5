"""A real HTTP server on 127.0.0.1 that plays the TLC source: files, error pages, faults.

Every file is sent with an ETag (its MD5) and a Last-Modified (when it was added), answers HEAD and conditional
GETs (If-None-Match, If-Modified-Since: 304), and a file that is not there is a 404, or with `missing_status = 403`
CloudFront's answer: 403 with an S3 AccessDenied XML body. Every GET is counted per path in `requests`, every file
sent whole in `sent`, every HEAD in `heads`, so a test can assert that a rerun downloads nothing.
"""

from __future__ import annotations

import collections
import datetime as dt
import email.utils
import hashlib
import ipaddress
import ssl
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


@dataclass
class Route:
    body: bytes
    status: int = 200
    content_type: str = "application/octet-stream"
    # Faults: answer `fail_status` (500) to the first `fail_first` requests; send only `cut_after` bytes of the body
    # (with the full Content-Length) and close, to the first `cut_first` requests.
    fail_first: int = 0
    fail_status: int = 500
    fail_headers: dict[str, str] = field(default_factory=dict)  # e.g. Retry-After on a 429 or 503
    cut_after: int | None = None
    cut_first: int = 0
    # Send `stall_after` bytes, then hang (until the server stops): a download to kill midway.
    stall_after: int | None = None
    send_length: bool = True
    headers: dict[str, str] = field(default_factory=dict)  # sent with the body, e.g. Content-Encoding
    # Validators: the body's MD5 as ETag and the time it was added as Last-Modified, unless given (None: not sent).
    etag: str | None = ""
    last_modified: str | None = ""
    head_fail_first: int = 0  # answer fail_status to the first HEAD requests
    allow_head: bool = True  # False: HEAD is answered 405, as some servers do

    def __post_init__(self) -> None:
        if self.etag == "":
            self.etag = f'"{hashlib.md5(self.body).hexdigest()}"'
        if self.last_modified == "":
            self.last_modified = email.utils.formatdate(usegmt=True)

    def validators(self) -> dict[str, str]:
        found = {"ETag": self.etag, "Last-Modified": self.last_modified}
        return {name: value for name, value in found.items() if value is not None}

    def unchanged_for(self, headers) -> bool:
        """Whether a conditional GET's If-None-Match or If-Modified-Since says the client has this version."""
        if headers.get("If-None-Match"):
            return self.etag is not None and self.etag in [t.strip() for t in headers["If-None-Match"].split(",")]
        since = headers.get("If-Modified-Since")
        if since and self.last_modified:
            return email.utils.parsedate_to_datetime(self.last_modified) <= email.utils.parsedate_to_datetime(since)
        return False


ACCESS_DENIED = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>AccessDenied</Code><Message>Access Denied</Message>'
    b"<RequestId>5XVQ1J2ZKDV3QHBE</RequestId><HostId>luigi-tasks-test</HostId></Error>"
)


class SourceServer:
    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        self.routes: dict[str, Route] = {}
        self.requests: collections.Counter[str] = collections.Counter()
        self.heads: collections.Counter[str] = collections.Counter()
        self.sent: collections.Counter[str] = collections.Counter()  # files sent whole: downloads
        self.missing_status = 404  # 403: a missing file is answered as CloudFront does, with S3's AccessDenied
        self.delay = 0.0  # seconds before each answer: a distant server
        self.stopping = threading.Event()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:  # noqa: N802 - the http.server API
                server.requests[self.path] += 1
                time.sleep(server.delay)
                seen = server.requests[self.path]
                route = server.routes.get(self.path)
                if route is None:
                    self._missing()
                    return
                if seen <= route.fail_first:
                    page = b"<html><body>Try again later</body></html>"
                    self._answer(route.fail_status, page, "text/html", headers=route.fail_headers)
                    return
                if route.stall_after is not None:
                    self._stall(route)
                    return
                if route.cut_after is not None and seen <= route.cut_first:
                    self.send_response(route.status)
                    self.send_header("Content-Type", route.content_type)
                    self.send_header("Content-Length", str(len(route.body)))
                    self.end_headers()
                    self.wfile.write(route.body[: route.cut_after])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                if route.status == 200 and route.unchanged_for(self.headers):
                    self._answer(304, b"", route.content_type, headers=route.validators(), body_allowed=False)
                    return
                headers = {**route.validators(), **route.headers}
                self._answer(route.status, route.body, route.content_type, route.send_length, headers)
                server.sent[self.path] += route.status == 200

            def do_HEAD(self) -> None:  # noqa: N802 - the http.server API
                server.heads[self.path] += 1
                time.sleep(server.delay)
                route = server.routes.get(self.path)
                if route is None:
                    self._missing(body_allowed=False)
                elif not route.allow_head:
                    self._answer(405, b"", "text/html", body_allowed=False)
                elif server.heads[self.path] <= route.head_fail_first:
                    self._answer(route.fail_status, b"", "text/html", headers=route.fail_headers, body_allowed=False)
                else:
                    headers = {**route.validators(), **route.headers}
                    self._answer(route.status, route.body, route.content_type, route.send_length, headers, False)

            def _missing(self, body_allowed: bool = True) -> None:
                if server.missing_status == 403:
                    self._answer(403, ACCESS_DENIED, "application/xml", body_allowed=body_allowed)
                else:
                    self._answer(404, b"<html><body>Not Found</body></html>", "text/html", body_allowed=body_allowed)

            def _stall(self, route: Route) -> None:
                self.send_response(route.status)
                self.send_header("Content-Length", str(len(route.body)))
                self.end_headers()
                self.wfile.write(route.body[: route.stall_after])
                self.wfile.flush()
                server.stopping.wait(60)
                self.close_connection = True

            def _answer(
                self,
                status: int,
                body: bytes,
                content_type: str,
                send_length: bool = True,
                headers: dict[str, str] | None = None,
                body_allowed: bool = True,
            ) -> None:
                """The answer; for a HEAD (`body_allowed` False) its status and headers alone, Content-Length
                included; a 304 has neither body nor length."""
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                if send_length and status != 304:
                    self.send_header("Content-Length", str(len(body)))
                elif status != 304:
                    self.close_connection = True
                self.end_headers()
                if body_allowed:
                    self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - keep test output quiet
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        if tls is not None:
            self._httpd.socket = tls.wrap_socket(self._httpd.socket, server_side=True)
        self.port = self._httpd.server_address[1]
        self.base_url = f"{'https' if tls else 'http'}://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,), daemon=True)

    def start(self) -> SourceServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.stopping.set()
        self._httpd.shutdown()
        self._httpd.server_close()

    def add(self, path: str, body: bytes, **fault: object) -> str:
        """Serve `body` at `path`; returns its URL."""
        self.routes[path] = Route(body=body, **fault)
        return self.base_url + path

    def total_requests(self) -> int:
        return sum(self.requests.values())


def self_signed_tls(folder: Path) -> ssl.SSLContext:
    """A server TLS context whose certificate for 127.0.0.1 is signed by itself: no client trusts it."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.timezone.utc)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = folder / "cert.pem", folder / "key.pem"
    cert_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_file, key_file)
    return context
