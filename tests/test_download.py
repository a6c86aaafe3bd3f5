"""Streaming download against a real HTTP server: retries, error pages, truncation, atomicity."""

from __future__ import annotations

import datetime as dt
import functools
import gzip
import os
import signal
import subprocess
import sys
import time

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from luigi_tasks.catalog import GREEN, YELLOW, plan_columns
from luigi_tasks.download import download, redact_url
from luigi_tasks.errors import DataError, NotPublished, SourceError
from luigi_tasks.synthetic import write_trip_csv
from tests.conftest import DATA, files_under

YELLOW_CSV = (DATA / "yellow_tripdata_2020-07_head266.csv").read_bytes()


def fetch(url, dest, dataset=YELLOW, label="yellow 2020-07", **options):
    check = functools.partial(plan_columns, dataset, where=f"{label} ({url})")
    return download(url, dest, label=label, check_header=check, retries=2, retry_backoff=0.01, **options)


def test_downloads_gzip_as_published(tmp_path, server):
    body = gzip.compress(YELLOW_CSV)
    url = server.add("/yellow_tripdata_2020-07.csv.gz", body)
    dest = tmp_path / "raw" / "yellow_tripdata_2020-07.csv.gz"
    seen = []
    assert fetch(url, dest, progress=lambda done, total: seen.append((done, total))) == len(body)
    assert dest.read_bytes() == body
    assert seen[-1] == (len(body), len(body))
    assert files_under(tmp_path) == ["raw/yellow_tripdata_2020-07.csv.gz"]


def test_multi_member_gzip_is_whole(tmp_path, server):
    half = len(YELLOW_CSV) // 2
    body = gzip.compress(YELLOW_CSV[:half]) + gzip.compress(YELLOW_CSV[half:])
    url = server.add("/yellow_tripdata_2020-07.csv.gz", body)
    fetch(url, tmp_path / "y.csv.gz")
    assert gzip.decompress((tmp_path / "y.csv.gz").read_bytes()) == YELLOW_CSV


def test_plain_csv_and_parquet(tmp_path, server):
    fetch(server.add("/yellow_tripdata_2020-07.csv", YELLOW_CSV), tmp_path / "y.csv")
    sink = pa.BufferOutputStream()
    pq.write_table(pa.table({"VendorID": [1], "tpep_pickup_datetime": [0]}), sink)
    body = sink.getvalue().to_pybytes()
    url = server.add("/yellow_tripdata_2023-01.parquet", body)
    with pytest.raises(DataError, match="missing required column"):
        fetch(url, tmp_path / "y.parquet")  # the footer is read and its columns checked
    assert not (tmp_path / "y.parquet").exists()


def test_404_is_not_retried(tmp_path, server):
    url = server.base_url + "/csv/yellow/yellow_tripdata_2031-01.csv.gz"
    with pytest.raises(NotPublished) as error:
        fetch(url, tmp_path / "y.csv.gz", label="yellow 2031-01")
    assert str(error.value) == f"yellow 2031-01 is not published at {url} (HTTP 404)"
    assert server.requests["/csv/yellow/yellow_tripdata_2031-01.csv.gz"] == 1
    assert files_under(tmp_path) == []


def test_html_page_with_status_200_is_an_error(tmp_path, server):
    page = b"<!DOCTYPE html>\n<html><head><title>GitHub</title></head><body>Sign in</body></html>"
    url = server.add("/yellow_tripdata_2020-07.csv.gz", page, content_type="text/html")
    with pytest.raises(SourceError) as error:
        fetch(url, tmp_path / "y.csv.gz")
    assert str(error.value).startswith(f"yellow 2020-07: {url} returned an HTML page ('<!DOCTYPE html>")
    assert str(error.value).endswith("not a csv.gz file")
    assert files_under(tmp_path) == []


def test_xml_error_page_for_a_plain_csv(tmp_path, server):
    page = b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>AccessDenied</Code></Error>'
    url = server.add("/yellow_tripdata_2020-07.csv", page)
    with pytest.raises(SourceError, match=r"returned an XML error page \('<\?xml .*AccessDenied"):
        fetch(url, tmp_path / "y.csv")
    assert files_under(tmp_path) == []


def test_not_gzip_at_a_gzip_url(tmp_path, server):
    url = server.add("/yellow_tripdata_2020-07.csv.gz", YELLOW_CSV)
    with pytest.raises(SourceError, match=r"is not csv.gz data \(starts with b'VendorID'\)"):
        fetch(url, tmp_path / "y.csv.gz")


def test_real_truncated_gzip_served_whole(tmp_path, server):
    body = (DATA / "broken" / "green_tripdata_2019-10.csv.gz.truncated").read_bytes()
    url = server.add("/green_tripdata_2019-10.csv.gz", body)
    with pytest.raises(SourceError) as error:
        fetch(url, tmp_path / "g.csv.gz", GREEN, "green 2019-10")
    assert str(error.value) == (
        f"green 2019-10: {url} is a truncated gzip file: the data ends before the gzip end-of-stream marker"
    )
    assert server.requests["/green_tripdata_2019-10.csv.gz"] == 1  # the same bytes would come again
    assert files_under(tmp_path) == []


def test_empty_body(tmp_path, server):
    url = server.add("/yellow_tripdata_2020-07.csv", b"")
    with pytest.raises(SourceError, match=r"returned an empty file \(0 bytes\)$"):
        fetch(url, tmp_path / "y.csv")
    assert files_under(tmp_path) == []


def test_unknown_column_in_header_is_caught_while_downloading(tmp_path, server):
    lines = YELLOW_CSV.split(b"\n")
    lines[0] += b",surge_fee"
    url = server.add("/yellow_tripdata_2020-07.csv.gz", gzip.compress(b"\n".join(lines)))
    with pytest.raises(DataError, match=rf"yellow 2020-07 \({url}\): unknown column 'surge_fee'"):
        fetch(url, tmp_path / "y.csv.gz")
    assert files_under(tmp_path) == []


def test_5xx_is_retried_then_succeeds(tmp_path, server):
    url = server.add("/y.csv.gz", gzip.compress(YELLOW_CSV), fail_first=2)
    fetch(url, tmp_path / "y.csv.gz")
    assert server.requests["/y.csv.gz"] == 3
    assert gzip.decompress((tmp_path / "y.csv.gz").read_bytes()) == YELLOW_CSV


def test_5xx_gives_up_after_the_configured_retries(tmp_path, server):
    url = server.add("/y.csv.gz", gzip.compress(YELLOW_CSV), fail_first=10)
    with pytest.raises(SourceError, match=rf"^yellow 2020-07: {url} answered HTTP 500; gave up after 3 attempts$"):
        fetch(url, tmp_path / "y.csv.gz")
    assert server.requests["/y.csv.gz"] == 3
    assert files_under(tmp_path) == []


def test_connection_cut_mid_file_is_retried(tmp_path, server):
    body = gzip.compress(YELLOW_CSV)
    url = server.add("/y.csv.gz", body, cut_after=len(body) // 2, cut_first=1)
    fetch(url, tmp_path / "y.csv.gz")
    assert server.requests["/y.csv.gz"] == 2
    assert (tmp_path / "y.csv.gz").read_bytes() == body


def test_secrets_in_the_url_never_reach_a_message(tmp_path, server):
    url = server.base_url.replace("http://", "http://user:hunter2@") + "/missing.csv.gz?X-Amz-Signature=s3cr3t"
    with pytest.raises(NotPublished) as error:
        fetch(url, tmp_path / "y.csv.gz")
    assert "hunter2" not in str(error.value) and "s3cr3t" not in str(error.value)
    assert redact_url(url) == server.base_url + "/missing.csv.gz"


def test_killed_download_leaves_nothing_that_looks_done(tmp_path, server):
    raw = write_trip_csv(tmp_path / "source.csv.gz", YELLOW, dt.date(2020, 7, 1), 100_000, seed=3)
    body = raw.read_bytes()
    raw.unlink()
    url = server.add("/y.csv.gz", body, stall_after=len(body) // 2)
    dest = tmp_path / "raw" / "y.csv.gz"
    code = (
        "import sys; from pathlib import Path; from luigi_tasks.download import download; "
        "download(sys.argv[1], Path(sys.argv[2]), label='yellow 2020-07')"
    )
    child = subprocess.Popen([sys.executable, "-c", code, url, str(dest)], cwd=os.getcwd())
    deadline = time.monotonic() + 30
    while not any(p.stat().st_size > 0 for p in dest.parent.glob(".*part*")):
        assert time.monotonic() < deadline, "the download never started"
        time.sleep(0.05)
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert not dest.exists()
    assert len(files_under(tmp_path)) == 1  # only the hidden part file of the dead writer

    server.add("/y.csv.gz", body)
    fetch(url, dest)
    assert files_under(tmp_path) == ["raw/y.csv.gz"]  # the dead writer's part file is gone
    assert dest.read_bytes() == body
