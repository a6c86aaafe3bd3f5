"""What the benchmark scripts share: the seeded input, their child processes and the environment they report.

The scripts run as `python bench/<script>.py`, with bench/ on sys.path, so they import this module as `common`;
so do the children they start, which run the same script again. Nothing here imports pyarrow, pandas or numpy
at module level: a benchmark's parent process must stay small, since on Linux its children inherit its peak RSS.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
WORK_DIR = REPO / "bench" / "out"

MONTH = dt.date(2021, 1, 1)
YELLOW_2021_01_ROWS = 1_369_765
SEED = 1
# The yellow header of 2019-2021 files.
COLUMNS = [
    "VendorID",
    "tpep_pickup_datetime",
    "tpep_dropoff_datetime",
    "passenger_count",
    "trip_distance",
    "RatecodeID",
    "store_and_fwd_flag",
    "PULocationID",
    "DOLocationID",
    "payment_type",
    "fare_amount",
    "extra",
    "mta_tax",
    "tip_amount",
    "tolls_amount",
    "improvement_surcharge",
    "total_amount",
    "congestion_surcharge",
]

MB = 1024 * 1024


# --- child processes -----------------------------------------------------------------------------------------------


def script_command(script: str, *args: str) -> list[str]:
    """The command that runs `script` (a benchmark's `__file__`) with `args` in a fresh interpreter like this one."""
    return [sys.executable, str(Path(script).resolve()), *args]


def wait_child(child: subprocess.Popen) -> tuple[str, int, resource.struct_rusage]:
    """Read the child's stdout and reap it with os.wait4; kill it if this process is interrupted."""
    try:
        assert child.stdout is not None
        output = child.stdout.read()
        _, status, usage = os.wait4(child.pid, 0)
    except BaseException:
        child.kill()
        child.wait()
        raise
    child.returncode = os.waitstatus_to_exitcode(status)
    child.stdout.close()
    return output, child.returncode, usage


def maxrss_mb() -> float:
    """This process's peak RSS so far, in MB."""
    # Linux reports ru_maxrss in KiB.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# --- inputs --------------------------------------------------------------------------------------------------------


def input_path(work: Path, rows: int, gz: bool = False) -> Path:
    """Where the seeded CSV of `rows` rows (gzipped if `gz`) is cached in `work`."""
    return work / f"yellow-{MONTH:%Y-%m}-{rows}r-seed{SEED}.csv{'.gz' if gz else ''}"


def generate_input(path: Path, rows: int) -> None:
    """Write the seeded CSV at `path` (complete files only: written under a part name, then renamed)."""
    from luigi_tasks.catalog import YELLOW
    from luigi_tasks.synthetic import write_trip_csv

    # Keep the suffix so that the generator still sees ".gz".
    part = path.with_name(f".part-{os.getpid()}-{path.name}")
    try:
        write_trip_csv(part, YELLOW, MONTH, rows, seed=SEED, columns=COLUMNS)
        os.replace(part, path)
    finally:
        part.unlink(missing_ok=True)


def ensure_input(path: Path, rows: int, script: str) -> None:
    """Generate the input unless it is already there, in a child process: `script --generate PATH ROWS`."""
    if path.exists():
        return
    print(f"generating {path.name} ({rows:,} rows) ...", file=sys.stderr, flush=True)
    subprocess.run(script_command(script, "--generate", str(path), str(rows)), cwd=REPO, check=True)


def warm_page_cache(path: Path) -> None:
    """Read the file once so that every method, including the first one timed, finds it in the page cache."""
    buffer = bytearray(1 << 20)
    with open(path, "rb", buffering=0) as source:
        while source.readinto(buffer):
            pass


# --- the whole history at the local source server ----------------------------------------------------------------

CSV_PATH = "/csv/{service}/{service}_tripdata_{year}-{month}.csv.gz"
ZONES_PATH = "/misc/taxi_zone_lookup.csv"


def months_back(months: int) -> dt.date:
    """The month `months` before the current one."""
    today = dt.date.today()
    index = today.year * 12 + today.month - 1 - months
    return dt.date(index // 12, index % 12 + 1, 1)


def serve_history(server, work: Path, stop: dt.date, rows: int, then=None) -> int:
    """Serve tiny generated months (`rows` rows, .csv.gz) of every service, from its first month to `stop`, and the
    zone lookup, from the tests' source server (tests/source_server.py); `then(raw, path, dataset, month)` is called
    with each file served (month None: the zone lookup). Returns the number of months."""
    import gzip

    from luigi_tasks.catalog import SERVICES, ZONES, next_month
    from luigi_tasks.synthetic import write_trip_csv

    months = 0
    for name, dataset in SERVICES.items():
        month = dataset.first_month
        while month <= stop:
            csv = write_trip_csv(work / f"{name}.csv", dataset, month, rows, seed=month.month)
            raw = work / f"{name}_tripdata_{month:%Y-%m}.csv.gz"
            raw.write_bytes(gzip.compress(csv.read_bytes(), mtime=0))
            path = CSV_PATH.format(service=name, year=f"{month:%Y}", month=f"{month:%m}")
            server.add(path, raw.read_bytes())
            if then:
                then(raw, path, dataset, month)
            raw.unlink()
            months += 1
            month = next_month(month)
    zones = REPO / "tests/data/taxi_zone_lookup.csv"
    server.add(ZONES_PATH, zones.read_bytes())
    if then:
        then(zones, ZONES_PATH, ZONES, None)
    return months


def history_server():
    """The tests' source server started, answering for a file it lacks as CloudFront does (403): the months after
    the newest served are not published yet."""
    from tests.source_server import SourceServer

    server = SourceServer().start()
    server.missing_status = 403
    return server


def source_settings(server) -> str:
    """The [tlc] section that reads every month from serve_history's server."""
    return f"[tlc]\nsource = csv\ncsv_url = {server.base_url}{CSV_PATH}\nzones_url = {server.base_url}{ZONES_PATH}\n\n"


# --- the report ----------------------------------------------------------------------------------------------------


def spread(seconds: list[float]) -> str:
    """Two table cells of some timings: their median, and their range (min-max), in seconds."""
    return f"{statistics.median(seconds):.2f} | {min(seconds):.2f}-{max(seconds):.2f}"


def verdict(ok: bool) -> str:
    """How a goal check ends: met, or not met (in bold)."""
    return "met" if ok else "**not met**"


def write_docs_page(path: Path, title: str, text: str, command: str, stamp: dict[str, str], load_before: float) -> None:
    """A benchmark's page: its title, results, the command that reproduces them and the environment (with the load
    average before and after, the machine being shared)."""
    load = {"load average (1 min) before and after, on a machine others share": f"{load_before:.1f}, "
            f"{os.getloadavg()[0]:.1f}"}  # fmt: skip
    env_lines = "\n".join(f"- {k}: {v}" for k, v in {**stamp, **machine(maxrss_mb()), **load}.items())
    path.write_text(
        f"# {title}\n\n{text}\n\n### How to reproduce\n\n```\n{command}\n```\n\n### Environment\n\n{env_lines}\n"
    )
    print(f"wrote {path.relative_to(REPO)}", file=sys.stderr)


# --- the environment -----------------------------------------------------------------------------------------------


def _git(*args: str) -> str:
    try:
        done = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return ""
    return done.stdout.strip()


def run_stamp() -> dict[str, str]:
    """The date of the run and the commit measured, marked when tracked files have uncommitted changes."""
    commit = _git("rev-parse", "--short", "HEAD")
    if commit and _git("status", "--porcelain", "--untracked-files=no"):
        commit += " (with uncommitted changes)"
    return {
        "date": dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
        "commit": commit or "unknown",
    }


def data_library_versions() -> dict[str, str]:
    """The versions of Python and of the data libraries every benchmark uses; imports them, so call it in a child."""
    import numpy
    import pandas
    import pyarrow

    return {
        "python": platform.python_version(),
        "pyarrow": pyarrow.__version__,
        "pandas": pandas.__version__,
        "numpy": numpy.__version__,
    }


def child_library_versions(script: str) -> dict[str, str]:
    """The library versions that `script --versions` prints as JSON: read in a child, so this process stays small."""
    done = subprocess.run(script_command(script, "--versions"), cwd=REPO, check=True, capture_output=True, text=True)
    return json.loads(done.stdout)


def machine(parent_rss_mb: float) -> dict[str, str]:
    """The machine the benchmark ran on, and the peak RSS of its parent process."""
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1024**3
    return {
        "nproc": str(os.cpu_count()),
        "CPU": cpu or platform.processor() or "unknown",
        "RAM": f"{memory:.0f} GiB",
        "OS": f"{platform.system()} {platform.release()}",
        "peak RSS of the benchmark's parent process": f"{parent_rss_mb:.0f} MB",
    }
