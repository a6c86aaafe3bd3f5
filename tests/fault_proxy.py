"""An HTTP proxy on 127.0.0.1 in front of an emulator that injects faults into chosen requests.

The official clients talk to the proxy as if it were the service; every request is forwarded to the
emulator unless a fault matches it. A fault matches by method and regular expressions searched in the
path (with its query) and, optionally, the body; it fires `times` times, and can first run a callable
(e.g. stop and start the emulator, or hold the request while the test kills the client). Its action is
one of:

- `forward`: forward the request as usual (after `before` ran).
- `fail`: answer `status` with a JSON error body in Google's shape; the emulator never sees the request.
- `lose_response`: forward the request, then answer `status` instead of the emulator's response (the work
  was done, the client cannot know).
- `cut`: read the request and close the connection without an answer (the connection died mid-request).

With `unique_jobs`, the proxy also keeps a rule of real BigQuery that bqemulator does not: a job id is
used once; inserting a job under an id already created answers 409 `duplicate` (bqemulator would run
the job again).
"""

from __future__ import annotations

import contextlib
import http.client
import json
import re
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer", "upgrade"}
ACTIONS = ("forward", "fail", "lose_response", "cut")


@dataclass
class Fault:
    method: str
    path: str
    action: str
    status: int = 503
    times: int = 1
    before: Callable[[], None] | None = None
    body: str | None = None
    hits: int = 0

    def matches(self, method: str, path: str, body: bytes) -> bool:
        return (
            self.hits < self.times
            and method == self.method
            and re.search(self.path, path) is not None
            and (self.body is None or re.search(self.body.encode(), body) is not None)
        )


class FaultProxy:
    """A reverse proxy to `upstream` (http://host:port); `inject` adds a fault, `seen` lists what passed."""

    def __init__(self, upstream: str, *, unique_jobs: bool = False) -> None:
        parts = urlsplit(upstream)
        self.unique_jobs = unique_jobs
        self.job_ids: set[str] = set()
        self.upstream = (parts.hostname or "127.0.0.1", parts.port or 80)
        self.faults: list[Fault] = []
        self.seen: list[tuple[str, str, str]] = []  # (method, path, what the proxy did)
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def inject(
        self,
        method: str,
        path: str,
        action: str,
        *,
        status: int = 503,
        times: int = 1,
        before: Callable[[], None] | None = None,
        body: str | None = None,
    ) -> Fault:
        if action not in ACTIONS:
            raise ValueError(f"unknown fault action {action!r}")
        fault = Fault(method, path, action, status, times, before, body)
        with self._lock:
            self.faults.append(fault)
        return fault

    def clear(self) -> None:
        with self._lock:
            self.faults.clear()

    def fired(self, action: str | None = None) -> list[tuple[str, str, str]]:
        return [entry for entry in self.seen if entry[2] != "forwarded" and action in (None, entry[2])]

    def _fault_for(self, method: str, path: str, body: bytes) -> Fault | None:
        with self._lock:
            for fault in self.faults:
                if fault.matches(method, path, body):
                    fault.hits += 1
                    return fault
        return None

    def _new_job_id(self, method: str, path: str, body: bytes) -> str | None:
        """The job id of a BigQuery jobs.insert, when job ids are kept unique."""
        if not (self.unique_jobs and method == "POST" and re.search(r"/projects/[^/]+/jobs(\?|$)", path)):
            return None
        return json.loads(body or b"{}").get("jobReference", {}).get("jobId")

    def _forward(self, method: str, path: str, headers: list[tuple[str, str]], body: bytes):
        connection = http.client.HTTPConnection(*self.upstream, timeout=120)
        try:
            connection.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
            for name, value in headers:
                if name.lower() not in HOP_BY_HOP and name.lower() != "content-length":
                    connection.putheader(name, value)
            connection.putheader("Content-Length", str(len(body)))
            # The emulator may answer before reading the whole body (e.g. an unknown upload): read its answer.
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                connection.endheaders(body)
            response = connection.getresponse()
            return response.status, response.getheaders(), response.read()
        finally:
            connection.close()

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base class's name
                pass

            def _body(self) -> bytes:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    chunks = []
                    while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
                        chunks.append(self.rfile.read(size))
                        self.rfile.readline()
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def _reply(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
                self.send_response_only(status)
                head = self.command == "HEAD"  # its Content-Length is the object's, and it has no body
                for name, value in headers:
                    if name.lower() not in HOP_BY_HOP and (head or name.lower() != "content-length"):
                        self.send_header(name, value)
                if not head:
                    self.send_header("Content-Length", str(len(body)))
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # the client may be dead
                    self.end_headers()
                    self.wfile.write(body)

            def _error(self, status: int, message: str = "", reason: str = "backendError") -> None:
                message = message or f"fault injected by the test proxy (HTTP {status})"
                error = {"code": status, "message": message, "errors": [{"reason": reason, "message": message}]}
                self._reply(status, [("Content-Type", "application/json")], json.dumps({"error": error}).encode())

            def _handle(self) -> None:
                body = self._body()
                fault = proxy._fault_for(self.command, self.path, body)
                if fault is not None and fault.before is not None:
                    fault.before()
                action = fault.action if fault and fault.action != "forward" else "forwarded"
                proxy.seen.append((self.command, self.path, action))
                if action == "cut":
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                if action == "fail":
                    self._error(fault.status)
                    return
                job_id = proxy._new_job_id(self.command, self.path, body)
                if job_id is not None and job_id in proxy.job_ids:
                    proxy.seen[-1] = (self.command, self.path, "duplicate")
                    self._error(409, f"Already Exists: Job {job_id}", "duplicate")
                    return
                try:
                    status, headers, answer = proxy._forward(self.command, self.path, list(self.headers.items()), body)
                except OSError:  # the emulator is down: so is the connection, as the client sees it
                    self.close_connection = True
                    return
                if job_id is not None and status == 200:
                    proxy.job_ids.add(job_id)
                if action == "lose_response":
                    self._error(fault.status)
                    return
                self._reply(status, headers, answer)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _handle  # noqa: N815 - http.server's names

        return Handler

    def start(self) -> FaultProxy:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
