"""Operations through the real command line: a real luigid, two workers at once, exit codes, notifications."""

from __future__ import annotations

import email
import email.policy
import json
import signal
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import psycopg2
import pytest
import requests
from aiosmtpd.controller import Controller

from luigi_tasks import history
from tests.conftest import (
    DATA,
    REPO,
    command_env,
    luigi_command,
    pipeline_settings,
    serve_csv_month,
    serve_zones,
    write_config,
)
from tests.postgres_cluster import free_port

YELLOW_HEAD = (DATA / "yellow_tripdata_2020-07_head266.csv").read_bytes()
BACKFILL = [str(REPO / "bin/backfill")]


def scheduler_api(port: int, method: str, **data) -> dict:
    reply = requests.get(f"http://127.0.0.1:{port}/api/{method}", params={"data": json.dumps(data)}, timeout=10)
    return reply.json()["response"]


@pytest.fixture
def luigid(tmp_path):
    """A real central scheduler on a free port of 127.0.0.1, started by bin/luigid with a temp state dir."""
    port = free_port()
    env = {**command_env(), "LUIGI_TASKS_STATE_DIR": str(tmp_path / "state")}
    server = subprocess.Popen(
        [str(REPO / "bin/luigid"), "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=tmp_path,
    )
    deadline = time.monotonic() + 30
    while True:
        try:
            scheduler_api(port, "task_list", status="DONE", upstream_status="", search="")
            break
        except requests.ConnectionError:
            assert server.poll() is None, "luigid exited"
            assert time.monotonic() < deadline, "luigid did not start"
            time.sleep(0.1)
    yield port
    server.terminate()
    server.wait(timeout=10)


def listening_addresses(port: int) -> set[str]:
    """Local addresses (hex, as the kernel lists them) with a TCP socket listening on `port`."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            address, hex_port = fields[1].split(":")
            if int(hex_port, 16) == port and fields[3] == "0A":  # 0A: LISTEN
                found.add(address)
    return found


def test_luigid_listens_on_loopback_only(luigid):
    assert listening_addresses(luigid) == {"0100007F"}  # 127.0.0.1


def test_backfill_through_luigid_and_its_task_list(tmp_path, server, luigid):
    for at in ("2020-07", "2020-08"):
        serve_csv_month(server, "yellow", at, YELLOW_HEAD)
    serve_zones(server)
    config = write_config(tmp_path / "luigi.cfg", pipeline_settings(server, tmp_path / "lake"))
    args = ["yellow", "2020-07", "2020-08", "--scheduler-host", "127.0.0.1", "--scheduler-port", str(luigid)]
    done = luigi_command(args, config, program=BACKFILL)
    assert done.returncode == 0, done.stderr

    tasks = scheduler_api(luigid, "task_list", status="DONE", upstream_status="", search="")
    families = sorted(task["name"] for task in tasks.values())
    assert families == sorted(
        ["Backfill", "DownloadZones", "ZonesToParquet"] + ["IngestMonth", "ToParquet", "DownloadTripData"] * 2
    )
    assert scheduler_api(luigid, "task_list", status="FAILED", upstream_status="", search="") == {}
    runs = history.runs(tmp_path / "history.sqlite")
    assert sorted(r["task_family"] for r in runs if r["rows"]) == ["ToParquet", "ToParquet", "ZonesToParquet"]


def test_two_workers_on_one_backfill_do_each_month_once(tmp_path, server, luigid, pg_dsn):
    months = ["2020-07", "2020-08", "2020-09", "2020-10"]
    for at in months:
        serve_csv_month(server, "yellow", at, YELLOW_HEAD)
    serve_zones(server)
    settings = {**pipeline_settings(server, tmp_path / "lake"), ("postgres", "dsn"): pg_dsn}
    config = write_config(tmp_path / "luigi.cfg", settings)
    args = ["yellow", months[0], months[-1], "--sinks", "lake,postgres", "--worker-keep-alive", "--no-lock",
            "--scheduler-host", "127.0.0.1", "--scheduler-port", str(luigid)]  # fmt: skip
    env = command_env(config)
    workers = [
        subprocess.Popen([*BACKFILL, *args], cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        for _ in range(2)
    ]
    outputs = [w.communicate(timeout=300)[0].decode() for w in workers]
    # A worker that finds a month taken by the other says so: luigi's "not granted run permission",
    # [retcode] not_run (25); one whose remaining tasks all wait on what the other runs (the zone lookup that
    # every conversion needs) ends when the other is done, [retcode] already_running (10). Neither fails; the
    # work is done once, and a rerun has nothing to do.
    assert {w.returncode for w in workers} <= {0, 10, 25}, outputs
    assert all("failed" not in out.split("Execution Summary")[1] for out in outputs)
    rerun = luigi_command(args, config, program=BACKFILL)
    assert rerun.returncode == 0 and "Did not run any tasks" in rerun.stderr

    runs = history.runs(tmp_path / "history.sqlite", limit=1000)
    per_task: dict[str, int] = {}
    for run in runs:
        per_task[run["task_id"]] = per_task.get(run["task_id"], 0) + 1
    assert all(count == 1 for count in per_task.values()), per_task  # every task ran once, in one worker
    assert len({run["pid"] for run in runs}) == 2  # and both workers did some of the work
    loads = [r for r in runs if r["task_family"] == "LoadToPostgres"]
    assert len(loads) == 4 and all(r["rows"] == 266 for r in loads)
    with psycopg2.connect(pg_dsn) as conn, conn.cursor() as cur:
        cur.execute("SELECT source_month::text, count(*) FROM yellow_tripdata GROUP BY 1 ORDER BY 1")
        assert cur.fetchall() == [(f"{at}-01", 266) for at in months]
    conn.close()


def test_an_overlapping_identical_run_exits_already_running(tmp_path, server):
    # The first run hangs in its download, holding luigi's lock.
    serve_csv_month(server, "yellow", "2020-07", YELLOW_HEAD * 2000, stall_after=1000)
    config = write_config(tmp_path / "luigi.cfg", pipeline_settings(server, tmp_path / "lake"))
    env = command_env(config)
    first = subprocess.Popen([str(REPO / "bin/ingest-month"), "yellow", "2020-07"], cwd=REPO, env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while not server.requests:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        second = luigi_command(["yellow", "2020-07"], config, program=[str(REPO / "bin/ingest-month")])
        assert second.returncode == 10, second.stderr  # [retcode] already_running
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()


class _Receiver(BaseHTTPRequestHandler):
    bodies: list[dict] = []

    def do_POST(self) -> None:  # noqa: N802 - the http.server API
        length = int(self.headers["Content-Length"])
        type(self).bodies.append(json.loads(self.rfile.read(length)))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


class _Mailbox:
    def __init__(self) -> None:
        self.messages: list[str] = []

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 - the aiosmtpd API
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        texts = [part.get_content() for part in message.walk() if part.get_content_maintype() == "text"]
        self.messages.append(f"Subject: {message['Subject']}\n" + "\n".join(texts))
        return "250 OK"


def test_a_failure_sends_one_webhook_post_and_one_email_without_secrets(tmp_path, server, monkeypatch):
    serve_zones(server)
    _Receiver.bodies = []
    receiver = ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    mailbox = _Mailbox()
    smtp = Controller(mailbox, hostname="127.0.0.1", port=free_port())
    smtp.start()
    webhook = f"http://127.0.0.1:{receiver.server_address[1]}/hooks/T000/B000/hook-secret-token"
    settings = {
        **pipeline_settings(server, tmp_path / "lake"),
        ("notify", "webhook_url"): webhook,
        ("postgres", "dsn"): "host=127.0.0.1 port=1 user=luigi password=pg-secret-pass",
        ("email", "receiver"): "oncall@example.com",
        ("email", "method"): "smtp",
        ("email", "force_send"): "true",
        ("smtp", "host"): "127.0.0.1",
        ("smtp", "port"): str(smtp.port),
    }
    config = write_config(tmp_path / "luigi.cfg", settings)
    monkeypatch.setenv("PGPASSWORD", "env-pg-secret")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "aws-secret-key-123")
    try:
        done = luigi_command(["fhv", "2031-01"], config, program=[str(REPO / "bin/ingest-month")])
    finally:
        receiver.shutdown()
        smtp.stop()
    assert done.returncode == 30
    [payload] = _Receiver.bodies
    assert payload["service"] == "fhv" and payload["month"] == "2031-01"
    assert payload["task"] == "DownloadTripData"
    assert payload["error"].startswith("fhv 2031-01 is not published at http://127.0.0.1:")
    [mail] = mailbox.messages
    assert "DownloadTripData" in mail and "fhv 2031-01 is not published at" in mail
    everything = json.dumps(payload) + mail + done.stdout + done.stderr
    for secret in ("hook-secret-token", "pg-secret-pass", "env-pg-secret", "aws-secret-key-123"):
        assert secret not in everything
