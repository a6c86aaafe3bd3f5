"""Secrets however written: webhook paths in logs, awkward DSN passwords, and failures reported without a history."""

from __future__ import annotations

import json
import logging
import secrets
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import quote, quote_plus

import luigi
import psycopg2
import pytest

from luigi_tasks import DownloadTripData, LoadToPostgres
from luigi_tasks.errors import DataError
from luigi_tasks.notify import post_failure
from luigi_tasks.postgres import _masked, describe_dsn, done_updates
from tests.conftest import luigi_settings, month, run_tasks

TOKEN = "T000/B000/hook-path-secret"
# A space, @, /, a literal "%41", a quote and a backslash: every character a DSN has to spell specially.
AWKWARD = "p a@s/s%41'\\w-" + secrets.token_hex(4)
UNPARSEABLE = (
    "[postgres] dsn is not a libpq URI or key=value string (libpq's reason is not shown: it may quote the password);"
    " expected e.g. host=H user=U password='a b' dbname=D, or a URI with its password percent-encoded"
)


class Webhook:
    """A real HTTP receiver of webhook posts on 127.0.0.1, answering `status`."""

    def __init__(self, status: int) -> None:
        self.bodies: list[dict] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - the http.server API
                receiver.bodies.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                self.send_response(status)
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.origin = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.url = f"{self.origin}/services/{TOKEN}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def webhook() -> Iterator[Webhook]:
    hook = Webhook(200)
    yield hook
    hook.server.shutdown()


@pytest.fixture
def luigi_log() -> Iterator[list[str]]:
    """Every message the luigi-interface logger emits during the test."""
    lines: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(record.getMessage())

    handler = Keep(logging.WARNING)
    logging.getLogger("luigi-interface").addHandler(handler)
    yield lines
    logging.getLogger("luigi-interface").removeHandler(handler)


def test_a_failed_webhook_post_logs_only_scheme_and_host(luigi_log):
    hook = Webhook(500)
    post_failure(hook.url, {"task_id": "ToParquet_2020_07_yellow_x", "text": "failed"})
    hook.server.shutdown()
    assert len(hook.bodies) == 1
    assert luigi_log == [f"could not notify {hook.origin} of ToParquet_2020_07_yellow_x: HTTPError"]


def _spelled(dsn_base: str, user: str, password: str) -> dict[str, tuple[str, str]]:
    """DSNs that libpq reads as the same password, each written its own way: {form: (dsn, password as written)}."""
    host, port, dbname = (dict(p.split("=") for p in dsn_base.split())[k] for k in ("host", "port", "dbname"))
    quoted = "'" + password.replace("\\", "\\\\").replace("'", "\\'") + "'"
    backslashed = "".join("\\" + c if c in " '\\" else c for c in password)
    encoded = quote(password, safe="")
    every_byte = "".join(f"%{b:02x}" for b in password.encode())
    conninfo = f"host={host} port={port} user={user} password={{}} dbname={dbname}"
    return {
        "conninfo-quoted": (conninfo.format(quoted), quoted),
        "conninfo-backslashes": (conninfo.format(backslashed), backslashed),
        "uri-userinfo": (f"postgresql://{user}:{encoded}@{host}:{port}/{dbname}", encoded),
        "uri-lowercase-hex": (f"postgresql://{user}:{encoded.lower()}@{host}:{port}/{dbname}", encoded.lower()),
        "uri-query": (f"postgresql://{host}:{port}/{dbname}?user={user}&password={encoded}", encoded),
        "uri-every-byte-encoded": (f"postgresql://{user}:{every_byte}@{host}:{port}/{dbname}", every_byte),
    }  # fmt: skip


@pytest.fixture
def awkward_role(postgres_server, pg_dsn, monkeypatch) -> Iterator[str]:
    """A login role whose password is AWKWARD; PGPASSWORD unset, so only the DSN's spelling can log in."""
    name = "awkward_" + secrets.token_hex(4)
    admin = psycopg2.connect(postgres_server)
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f"CREATE ROLE {name} LOGIN PASSWORD %s", (AWKWARD,))
    monkeypatch.delenv("PGPASSWORD", raising=False)
    yield name
    with admin.cursor() as cur:
        cur.execute(f"DROP ROLE {name}")
    admin.close()


def test_an_awkward_password_is_masked_however_the_dsn_spells_it(pg_dsn, awkward_role):
    for form, (dsn, written) in _spelled(pg_dsn, awkward_role, AWKWARD).items():
        assert done_updates(dsn, "table_updates", ["x"]) == set(), form  # libpq logs in with it: a real spelling
        shown = [AWKWARD, written, quote(AWKWARD, safe=""), quote_plus(AWKWARD), quote(AWKWARD, safe="").lower()]
        echoed = "server said: " + " | ".join(shown)  # as if a driver or server quoted the connection string
        assert _masked(echoed, dsn) == "server said: " + " | ".join(["****"] * len(shown)), form


@pytest.mark.parametrize(
    "dsn",
    ["host=127.0.0.1 port=1 user=u password=un quoted-secret dbname=d", "postgresql://u:p%zz-secret@127.0.0.1:1/d"],
    ids=["unquoted-space", "bad-percent-encoding"],
)
def test_an_unparseable_dsn_is_one_line_that_quotes_none_of_it(lake, webhook, dsn):
    with pytest.raises(DataError) as error:
        done_updates(dsn, "table_updates", ["x"])
    assert str(error.value) == UNPARSEABLE
    settings = {("postgres", "dsn"): dsn.replace("%", "%%"), ("notify", "webhook_url"): webhook.url}  # cfg syntax
    with luigi_settings(settings):
        result, _ = run_tasks(LoadToPostgres(service="yellow", month=month("2020-07")))
    assert not result.scheduling_succeeded
    history = (lake.parent / "history.sqlite").read_bytes().decode("utf-8", "replace")
    assert [body["error"] for body in webhook.bodies] == [f"cannot tell whether it is done: {UNPARSEABLE}"]
    for text in (history, json.dumps(webhook.bodies), result.summary_text):
        assert "secret" not in text


def test_a_bare_at_in_a_uri_password_is_refused_before_connecting_and_never_shown(lake, webhook, luigi_log):
    # libpq splits at the first '@': user etl, password hunter2, host "Pw-tail-secret@127.0.0.1".
    dsn = "postgresql://etl:hunter2@Pw-tail-secret@127.0.0.1:1/db"
    refused = (
        "[postgres] dsn has an '@' in its user name or password that is not percent-encoded (libpq would read what"
        " follows it as the host name, and show it; the DSN is not shown): write the '@' as %40"
    )
    with pytest.raises(DataError) as error:
        done_updates(dsn, "table_updates", ["x"])
    assert str(error.value) == refused
    assert describe_dsn(dsn) == "(a [postgres] dsn with an '@' in its user name or password: not shown)"
    settings = {("postgres", "dsn"): dsn, ("notify", "webhook_url"): webhook.url}
    with luigi_settings(settings):
        result, _ = run_tasks(LoadToPostgres(service="yellow", month=month("2020-07")))
    assert not result.scheduling_succeeded
    assert [body["error"] for body in webhook.bodies] == [f"cannot tell whether it is done: {refused}"]
    history = (lake.parent / "history.sqlite").read_bytes().decode("utf-8", "replace")
    for text in (history, json.dumps(webhook.bodies), result.summary_text, *luigi_log):
        assert "Pw-tail" not in text and "hunter2" not in text


@pytest.mark.parametrize("where", ["full-disk", "not-a-directory"])
def test_the_webhook_is_sent_when_the_run_history_cannot_be_written(lake, webhook, luigi_log, where):
    blocker = lake.parent / "a-file"
    blocker.write_text("")
    history = {"full-disk": "/dev/full", "not-a-directory": str(blocker / "history.sqlite")}[where]
    dead = "host=127.0.0.1 port=1 user=luigi dbname=d"
    settings = {("history", "path"): history, ("notify", "webhook_url"): webhook.url, ("postgres", "dsn"): dead}
    with luigi_settings(settings):
        # A task that fails when run (the month is not published), and one whose check fails (no database).
        unpublished = DownloadTripData(service="yellow", month=month("2031-01"))
        result, failures = run_tasks(unpublished, LoadToPostgres(service="yellow", month=month("2020-07")))
    assert result.status == luigi.LuigiStatusCode.FAILED_AND_SCHEDULING_FAILED
    assert list(failures) == [unpublished.task_id]  # the original failure, not the history's
    posted = sorted((body["task"], body["error"].split(" at ")[0]) for body in webhook.bodies)
    assert posted == [
        ("DownloadTripData", "yellow 2031-01 is not published"),
        ("LoadToPostgres", "cannot tell whether it is done: cannot connect to PostgreSQL"),
    ]
    unrecorded = [line for line in luigi_log if line.startswith("could not record")]
    assert len(unrecorded) == 2
    cause = "database or disk is full" if where == "full-disk" else "File exists"
    assert all(f": cannot write the run history {history}: " in line and cause in line for line in unrecorded)


def test_a_failure_is_posted_when_a_bad_lake_setting_hides_the_history_too(lake, webhook, luigi_log):
    # The history's default place is in the lake, so a bad [lake] setting fails the history as well.
    settings = {("lake", "row_group_rows"): "0", ("history", "path"): "", ("notify", "webhook_url"): webhook.url}
    with luigi_settings(settings):
        task = DownloadTripData(service="yellow", month=month("2020-07"))
        result, _ = run_tasks(task)
    assert result.status == luigi.LuigiStatusCode.SCHEDULING_FAILED
    message = "[lake] row_group_rows 0 is out of range: expected 1 or more rows"
    assert [body["error"] for body in webhook.bodies] == [f"cannot tell whether it is done: {message}"]
    assert [line for line in luigi_log if line.startswith("could not record")] == [
        f"could not record {task.task_id}: {message}"
    ]
