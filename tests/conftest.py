"""Fixtures: a real HTTP source on 127.0.0.1, luigi configured to use it and a temporary lake."""

from __future__ import annotations

import contextlib
import datetime as dt
import gzip
import logging
import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import luigi
import luigi.configuration
import psycopg2
import pytest
from luigi.task_register import Register

from tests.postgres_cluster import PostgresCluster
from tests.source_server import SourceServer

pytest_plugins = ["tests.emulators"]  # GCS, BigQuery and S3 emulators and their fixtures

DATA = Path(__file__).parent / "data"
REPO = Path(__file__).resolve().parent.parent
CSV_PATH = "/csv/{service}/{service}_tripdata_{year}-{month}.csv.gz"
PARQUET_PATH = "/trip-data/{service}_tripdata_{year}-{month}.parquet"
ZONES_PATH = "/misc/taxi_zone_lookup.csv"


@contextlib.contextmanager
def luigi_settings(settings: dict[tuple[str, str], str]) -> Iterator[None]:
    """Set luigi config keys for the duration of a test, then put the old values back."""
    config = luigi.configuration.get_config()
    old = {}
    for (section, key), value in settings.items():
        if not config.has_section(section):
            config.add_section(section)
        old[(section, key)] = config.get(section, key, None)
        config.set(section, key, value)
    Register.clear_instance_cache()  # config classes are cached instances holding old values
    try:
        yield
    finally:
        for (section, key), value in old.items():
            if value is None:
                config.remove_option(section, key)
            else:
                config.set(section, key, value)
        Register.clear_instance_cache()


@pytest.fixture
def server() -> Iterator[SourceServer]:
    source = SourceServer().start()
    yield source
    source.stop()


@pytest.fixture
def lake(tmp_path: Path, server: SourceServer) -> Iterator[Path]:
    """The lake root, with [tlc] pointing at the local server (csv.gz source, fast retries), which serves the zone
    lookup (every month's conversion checks its location ids against it)."""
    root = tmp_path / "lake"
    serve_zones(server)
    with luigi_settings(pipeline_settings(server, root)):
        yield root


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """DSN of a PostgreSQL server: LUIGI_TASKS_TEST_PG_DSN if set, else a throwaway cluster."""
    existing = os.environ.get("LUIGI_TASKS_TEST_PG_DSN")
    if existing:
        yield existing
        return
    cluster = PostgresCluster().start()
    os.environ["PGPASSWORD"] = cluster.password  # libpq reads it; the DSN carries no password
    try:
        yield cluster.dsn
    finally:
        cluster.remove()
        os.environ.pop("PGPASSWORD", None)


@pytest.fixture
def pg_dsn(postgres_server: str) -> Iterator[str]:
    """A fresh, empty database for one test."""
    name = "test_" + secrets.token_hex(4)
    admin = psycopg2.connect(postgres_server)
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f"CREATE DATABASE {name}")
    yield postgres_server.replace("dbname=postgres", f"dbname={name}")
    with admin.cursor() as cur:
        cur.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    admin.close()


@pytest.fixture
def pg_lake(lake: Path, pg_dsn: str) -> Iterator[Path]:
    """The lake fixture, plus [postgres] dsn pointing at a fresh database."""
    with luigi_settings({("postgres", "dsn"): pg_dsn}):
        yield lake


def pipeline_settings(server: SourceServer, root: Path, source: str = "csv") -> dict[tuple[str, str], str]:
    return {
        ("tlc", "source"): source,
        ("tlc", "csv_url"): server.base_url + CSV_PATH,
        ("tlc", "parquet_url"): server.base_url + PARQUET_PATH,
        ("tlc", "zones_url"): server.base_url + ZONES_PATH,
        ("tlc", "retries"): "2",
        ("tlc", "retry_backoff"): "0.01",
        ("tlc", "timeout"): "10",
        ("lake", "root"): str(root),
        ("history", "path"): str(root.parent / "history.sqlite"),  # beside the lake, so tests see the lake alone
        # Tests serve one month's file as other months too: all its pickups lie outside them.
        ("quality", "outside_month_fail"): "1",
    }


def month_path(template: str, service: str, month: str) -> str:
    year, mm = month.split("-")
    return template.format(service=service, year=year, month=mm)


def serve_csv_month(server: SourceServer, service: str, month: str, csv_bytes: bytes, **fault: object) -> str:
    """Serve a month as the course's .csv.gz; returns its URL."""
    return server.add(month_path(CSV_PATH, service, month), gzip.compress(csv_bytes, mtime=0), **fault)


# What the zone lookup leaves in a lake: every month's conversion checks its location ids against it.
ZONE_FILES = [
    "raw/zones/_taxi_zone_lookup.csv.json",
    "raw/zones/taxi_zone_lookup.csv",
    "zones/_taxi_zone_lookup.json",
    "zones/taxi_zone_lookup.parquet",
]


def serve_zones(server: SourceServer) -> str:
    return server.add(ZONES_PATH, (DATA / "taxi_zone_lookup.csv").read_bytes(), content_type="text/csv")


def logged(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    """Each record once: pytest also attaches caplog to non-propagating loggers such as luigi_tasks, whose records
    luigi_tasks.cli hands on to luigi-interface, so caplog sees them twice."""
    return list({id(record): record for record in caplog.records}.values())


def run_tasks(*tasks: luigi.Task) -> tuple[luigi.execution_summary.LuigiRunResult, dict[str, BaseException]]:
    """Run tasks with the local scheduler; returns the result and the exception of each failed task."""
    failures: dict[str, BaseException] = {}

    def record(task: luigi.Task, exception: BaseException) -> None:
        failures[task.task_id] = exception

    luigi.Task.event_handler(luigi.Event.FAILURE)(record)
    try:
        result = luigi.build(list(tasks), local_scheduler=True, detailed_summary=True, log_level="WARNING")
    finally:
        luigi.Task._event_callbacks[luigi.Task][luigi.Event.FAILURE].discard(record)
    return result, failures


def files_under(root: Path) -> list[str]:
    """Every file under root (hidden part files included), relative, sorted."""
    if not root.exists():
        return []
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def month(text: str) -> dt.date:
    year, mm = text.split("-")
    return dt.date(int(year), int(mm), 1)


def write_config(path: Path, settings: dict[tuple[str, str], str]) -> Path:
    sections: dict[str, list[str]] = {}
    for (section, key), value in settings.items():
        sections.setdefault(section, []).append(f"{key} = {value}")
    path.write_text("".join(f"[{s}]\n" + "\n".join(lines) + "\n\n" for s, lines in sections.items()))
    return path


def luigi_command(
    args: list[str], config: Path, program: list[str] | None = None, cwd: Path = REPO
) -> subprocess.CompletedProcess:
    """The README's command, as a user runs it (from the repo unless `cwd` says otherwise) with their own config."""
    program = program or [str(Path(sys.executable).with_name("luigi")), "--module", "luigi_tasks"]
    return subprocess.run(
        [*program, *args], cwd=cwd, env=command_env(config), capture_output=True, text=True, timeout=300
    )


def command_env(config: Path | None = None) -> dict[str, str]:
    """The environment of a command a user runs: this venv's programs first, and their config file."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    if config is not None:
        env["LUIGI_CONFIG_PATH"] = str(config)
    return env
