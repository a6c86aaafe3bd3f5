"""More bad input and hostile parameters: each gives a message naming what is wrong, and leaves nothing."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from luigi_tasks import IngestMonth, UploadToGCS, UploadToS3
from luigi_tasks.catalog import FHV, YELLOW
from luigi_tasks.convert import to_canonical_parquet
from luigi_tasks.errors import DataError, PipelineError
from luigi_tasks.sql import checked_identifier
from luigi_tasks.synthetic import write_trip_csv
from luigi_tasks.tasks.gcs import checked_prefix
from tests.conftest import DATA, files_under, luigi_settings, month

YELLOW_HEAD = DATA / "yellow_tripdata_2020-07_head266.csv"


def test_non_utf8_bytes_name_the_file_and_month(tmp_path):
    lines = YELLOW_HEAD.read_bytes().split(b"\n")
    lines[5] = lines[5].replace(b",N,", b",\xff\xfe,", 1)
    raw = tmp_path / "yellow_tripdata_2020-07.csv"
    raw.write_bytes(b"\n".join(lines))
    with pytest.raises(DataError, match=r"^yellow 2020-07 \(.*yellow_tripdata_2020-07.csv\): .*(UTF8|utf-8|UTF-8)"):
        to_canonical_parquet(
            raw, tmp_path / "out" / "x.parquet", dataset=YELLOW, month=month("2020-07"), source_url="x"
        )
    assert files_under(tmp_path / "out") == []


def test_parquet_with_a_required_column_projected_away(tmp_path):
    raw = tmp_path / "fhv_tripdata_2023-01.parquet"
    pq.write_table(
        pa.table({"dispatching_base_num": ["B1"], "pickup_datetime": pa.array([dt.datetime(2023, 1, 1)])}), raw
    )
    with pytest.raises(DataError, match=r"fhv 2023-01 \(.*\): missing required columns dropoff_datetime, PULocationID"):
        to_canonical_parquet(raw, tmp_path / "out" / "x.parquet", dataset=FHV, month=month("2023-01"), source_url="x")
    assert files_under(tmp_path / "out") == []


def test_disk_full_while_downloading_leaves_nothing(tmp_path, server):
    # A file-size limit stands in for a full disk: the write fails with EFBIG, as it would with ENOSPC.
    url = server.add("/big.csv", YELLOW_HEAD.read_bytes() * 100)  # 2.4 MB
    code = (
        "import resource, signal, sys; from pathlib import Path; "
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN); resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20)); "
        "from luigi_tasks.download import download; from luigi_tasks.errors import PipelineError\n"
        "try:\n    download(sys.argv[1], Path(sys.argv[2]), label='yellow 2020-07', retries=0)\n"
        "except PipelineError as e:\n    print(e); sys.exit(3)"
    )
    dest = tmp_path / "raw" / "big.csv"
    done = subprocess.run([sys.executable, "-c", code, url, str(dest)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 3, done.stderr
    assert done.stdout.strip().startswith(f"yellow 2020-07: cannot write {dest}: File too large")
    assert files_under(tmp_path / "raw") == []


def test_disk_full_while_converting_names_the_month_and_leaves_nothing(tmp_path):
    raw = write_trip_csv(tmp_path / "yellow.csv", YELLOW, month("2020-01"), 50_000, seed=1)  # ~1.5 MB of Parquet
    dest = tmp_path / "lake" / "yellow_tripdata_2020-01.parquet"
    dest.parent.mkdir()
    code = (
        "import resource, signal, sys, datetime as dt; from pathlib import Path; "
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN); resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 18, 1 << 18)); "
        "from luigi_tasks.catalog import YELLOW; from luigi_tasks.convert import to_canonical_parquet; "
        "from luigi_tasks.errors import PipelineError\n"
        "try:\n    to_canonical_parquet(Path(sys.argv[1]), Path(sys.argv[2]), dataset=YELLOW, "
        "month=dt.date(2020, 1, 1), source_url='x')\n"
        "except PipelineError as e:\n    print(e); sys.exit(3)"
    )
    done = subprocess.run([sys.executable, "-c", code, raw, dest], capture_output=True, text=True, timeout=60)
    assert done.returncode == 3, done.stderr
    assert done.stdout.strip() == f"yellow 2020-01 ({raw}): cannot write {dest}: File too large"
    assert files_under(dest.parent) == []


@pytest.mark.parametrize("service", ["../etc", "yellow/../../x", "yellow; rm -rf /", "YELLOW"])
def test_service_parameter_is_one_of_the_catalogue(service):
    with pytest.raises(ValueError, match="is not a valid choice"):
        IngestMonth(service=service, month=month("2021-01"))


@pytest.mark.parametrize("bad", ["2021-01/../../x", "2021-1", "2021-01; DROP TABLE x", "../2021-01"])
def test_month_parameter_is_a_strict_pattern(bad):
    with pytest.raises(DataError, match="expected YYYY-MM"):
        IngestMonth.month.parse(bad)


@pytest.mark.parametrize("name", ["table_updates; DROP TABLE zones", 'x"y', "a b", "1abc", "x" * 64])
def test_sql_identifiers_from_config_are_plain(name):
    with pytest.raises(DataError, match="is not a plain SQL identifier"):
        checked_identifier(name, "[postgres] marker_table")


@pytest.mark.parametrize("prefix", ["../outside", "raw/../../x", "raw?x=1", "raw\\x", "a b"])
def test_object_prefixes_from_config_are_plain(prefix):
    with pytest.raises(DataError, match="is not a plain object prefix"):
        checked_prefix(prefix, "[gcp] prefix")
    assert checked_prefix("/raw/tlc/", "[gcp] prefix") == "raw/tlc"


@pytest.mark.parametrize(
    ("key", "value"),
    [
        (("gcp", "dataset"), "trips`; DROP TABLE trips.zones; --"),
        (("gcp", "dataset"), "trips.zones"),
        (("gcp", "project"), "p`.x.y`; SELECT 1; --"),
        (("gcp", "project"), "../other"),
        (("gcp", "bucket"), "../etc"),
        (("gcp", "bucket"), "bucket/other"),
        (("gcp", "bucket"), "b..x"),
        (("s3", "bucket"), "Bucket_With_Upper"),
        (("s3", "bucket"), "../etc"),
    ],
)
def test_cloud_names_from_config_follow_the_services_rules(key, value, lake, server):
    from luigi_tasks import config

    section, name = key
    with luigi_settings({key: value}), pytest.raises(DataError, match=rf"\[{section}\] {name} .* is not an? "):
        config.gcp() if section == "gcp" else config.s3()
    task = (UploadToGCS if section == "gcp" else UploadToS3)(service="yellow", month=month("2020-07"))
    with luigi_settings({key: value}), pytest.raises(DataError):  # the task fails before any request
        task.output()


def test_a_traversing_prefix_fails_the_task_before_anything_is_written(lake, server):
    settings = luigi_settings({("gcp", "bucket"): "bucket-b", ("gcp", "prefix"): "../../etc"})
    refused = pytest.raises(PipelineError, match=r"\[gcp\] prefix '../../etc' is not a plain object prefix")
    with settings, refused:
        UploadToGCS(service="yellow", month=month("2020-07")).output()
