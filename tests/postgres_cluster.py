"""A throwaway PostgreSQL cluster: initdb + pg_ctl in a temp dir, on a free port of 127.0.0.1.

Runs the server as the `postgres` OS user when started by root (initdb refuses root). Password
authentication (scram) is on, so tests see the real thing; the password goes through PGPASSWORD.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

USER = "luigi"


def server_bindir() -> Path:
    candidates = [os.environ.get("PG_BINDIR", "")]
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(p.split("/")[-2]), reverse=True)
    for candidate in candidates:
        if candidate and (Path(candidate) / "initdb").exists():
            return Path(candidate)
    raise RuntimeError("PostgreSQL server binaries not found: install Debian's postgresql or set PG_BINDIR")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class PostgresCluster:
    def __init__(self) -> None:
        self.bindir = server_bindir()
        self.base = Path(tempfile.mkdtemp(prefix="luigi-tasks-pg-"))
        self.data = self.base / "data"
        self.port = free_port()
        self.password = secrets.token_urlsafe(16)
        self._as_postgres = os.geteuid() == 0
        if self._as_postgres:
            owner = pwd.getpwnam("postgres")
            os.chown(self.base, owner.pw_uid, owner.pw_gid)
        password_file = self.base / "password"
        password_file.write_text(self.password)
        if self._as_postgres:
            os.chown(password_file, owner.pw_uid, owner.pw_gid)
        self._run(
            "initdb", "-D", str(self.data), "-U", USER, f"--pwfile={password_file}", "--auth=scram-sha-256",
            "-E", "UTF8", "--no-locale", "--no-sync",
        )  # fmt: skip
        password_file.unlink()

    def _run(self, program: str, *args: str) -> None:
        command = [str(self.bindir / program), *args]
        if self._as_postgres:
            command = ["runuser", "-u", "postgres", "--", *command]
        subprocess.run(command, check=True, capture_output=True, cwd=self.base)

    @property
    def dsn(self) -> str:
        return f"host=127.0.0.1 port={self.port} user={USER} dbname=postgres"

    def start(self) -> PostgresCluster:
        options = (
            f"-p {self.port} -k {self.base} -c listen_addresses=127.0.0.1"
            # Throwaway data: skip the flushes that make a durable server slow on a test machine.
            " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        )
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.base / "server.log"), "-o", options, "-w", "start")
        return self

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")

    def remove(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):  # already stopped
            self.stop("immediate")
        shutil.rmtree(self.base, ignore_errors=True)
