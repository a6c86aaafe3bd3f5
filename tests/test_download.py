"""Streaming download against a real HTTP server: retries, error pages, truncation, atomicity."""

from __future__ import annotations

import datetime as dt
import email.utils
import functools
import gzip
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import time

import pyarrow as pa
import pyarrow.csv
import pyarrow.parquet as pq
import pytest

from luigi_tasks.catalog import GREEN, YELLOW, plan_columns
from luigi_tasks.download import SourceVersion, download, probe, probe_many, redact_url
from luigi_tasks.errors import DataError, NotPublished, SourceError
from luigi_tasks.synthetic import write_trip_csv
from tests.conftest import DATA, files_under, logged
from tests.source_server import SourceServer, self_signed_tls

YELLOW_CSV = (DATA / "yellow_tripdata_2020-07_head266.csv").read_bytes()


def fetch(url, dest, dataset=YELLOW, label="yellow 2020-07", **options):
    check = functools.partial(plan_columns, dataset, where=f"{label} ({url})")
    return download(url, dest, label=label, check_header=check, retries=2, retry_backoff=0.01, **options)


def test_downloads_gzip_as_published(tmp_path, server):
    body = gzip.compress(YELLOW_CSV)
    url = server.add("/yellow_tripdata_2020-07.csv.gz", body)
    dest = tmp_path / "raw" / "yellow_tripdata_2020-07.csv.gz"
    seen = []
    assert fetch(url, dest, progress=lambda done, total: seen.append((done, total))).size == len(body)
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


def test_a_download_returns_the_validators_and_a_head_asks_for_them_alone(tmp_path, server):
    body = gzip.compress(YELLOW_CSV)
    url = server.add("/yellow_tripdata_2020-07.csv.gz", body)
    route = server.routes["/yellow_tripdata_2020-07.csv.gz"]
    sent = SourceVersion(route.etag, route.last_modified, len(body))
    assert fetch(url, tmp_path / "y.csv.gz") == sent
    assert probe(url, label="yellow 2020-07") == sent
    assert (server.requests["/yellow_tripdata_2020-07.csv.gz"], server.heads["/yellow_tripdata_2020-07.csv.gz"]) == (
        1,
        1,
    )
    assert SourceVersion.from_json(sent.to_json()) == sent

    server.add("/no-head.csv.gz", body, allow_head=False)  # a server that refuses HEAD is asked with a GET
    no_head = probe(server.base_url + "/no-head.csv.gz", label="yellow 2020-07")
    assert (no_head.etag, no_head.size) == (route.etag, len(body))
    assert (server.heads["/no-head.csv.gz"], server.requests["/no-head.csv.gz"]) == (1, 1)


@pytest.mark.parametrize("head", [True, False])
def test_403_is_not_published_only_with_s3s_access_denied_body(tmp_path, server, head):
    server.missing_status = 403  # CloudFront, for a file that is not there
    url = server.base_url + "/trip-data/yellow_tripdata_2031-01.parquet"
    ask = (lambda: probe(url, label="yellow 2031-01", retries=2, retry_backoff=0.01)) if head else (
        lambda: fetch(url, tmp_path / "y.parquet", label="yellow 2031-01"))  # fmt: skip
    with pytest.raises(NotPublished) as error:
        ask()
    assert str(error.value) == f"yellow 2031-01 is not published at {url} (HTTP 403)"
    assert files_under(tmp_path) == []

    page = b"<html><body>Request blocked by the firewall</body></html>"  # refused access, not a missing file
    server.add("/trip-data/yellow_tripdata_2031-01.parquet", page, status=403, content_type="text/html")
    with pytest.raises(SourceError) as error:
        ask()
    assert not isinstance(error.value, NotPublished)
    assert str(error.value) == f"yellow 2031-01: {url} answered HTTP 403"


def test_a_probe_is_retried_like_a_download(server, caplog):
    url = server.add("/y.csv.gz", gzip.compress(YELLOW_CSV), head_fail_first=2, fail_status=503)
    assert probe(url, label="yellow 2020-07", retries=2, retry_backoff=0.01).size == len(gzip.compress(YELLOW_CSV))
    assert server.heads["/y.csv.gz"] == 3 and server.requests["/y.csv.gz"] == 0
    assert [r.getMessage() for r in logged(caplog) if "retry" in r.getMessage()] == [
        f"yellow 2020-07: {url} answered HTTP 503; retry 1 of 2 in 0.0 s",
        f"yellow 2020-07: {url} answered HTTP 503; retry 2 of 2 in 0.0 s",
    ]
    server.add("/y.csv.gz", b"", head_fail_first=10, fail_status=503)
    with pytest.raises(SourceError, match=r"answered HTTP 503; gave up after 3 attempts$"):
        probe(url, label="yellow 2020-07", retries=2, retry_backoff=0.01)


def test_many_probes_at_once_give_each_its_answer(server):
    urls = {
        n: server.add(f"/f{n}.csv", b"x" * n) if n % 3 else f"{server.base_url}/missing{n}.csv" for n in range(1, 61)
    }
    answers = probe_many({n: (url, f"file {n}") for n, url in urls.items()}, workers=8, retries=0)
    assert {n for n, a in answers.items() if isinstance(a, NotPublished)} == {n for n in urls if n % 3 == 0}
    assert all(a.size == n for n, a in answers.items() if isinstance(a, SourceVersion))
    assert sum(server.heads.values()) == 60 and server.total_requests() == 0


def test_which_answers_count_as_a_changed_file():
    recorded = SourceVersion('"a"', "Mon, 02 Nov 2026 10:00:00 GMT", 1_000)
    assert SourceVersion('"a"', "Tue, 03 Nov 2026 10:00:00 GMT", 1_000).change_from(recorded, 1_000) is None
    assert SourceVersion('"b"', recorded.last_modified, 1_000).change_from(recorded, 1_000) == 'ETag "a" -> "b"'
    # Without ETags: Last-Modified, then the size.
    lm_only = SourceVersion(None, recorded.last_modified, 1_000)
    assert lm_only.change_from(recorded, 1_000) is None
    assert SourceVersion(None, "Tue, 03 Nov 2026 10:00:00 GMT", 1_000).change_from(recorded, 1_000) == (
        "Last-Modified Mon, 02 Nov 2026 10:00:00 GMT -> Tue, 03 Nov 2026 10:00:00 GMT"
    )
    assert (
        SourceVersion(None, recorded.last_modified, 1_200).change_from(recorded, 1_000) == "size 1,000 -> 1,200 bytes"
    )
    # A month fetched before validators were recorded: only a size other than the download's is a change.
    assert SourceVersion('"b"', "Tue, 03 Nov 2026 10:00:00 GMT", 1_000).change_from(None, 1_000) is None
    assert SourceVersion('"b"', None, 1_600).change_from(None, 1_000) == "size 1,000 -> 1,600 bytes"
    assert SourceVersion(None, None, None).change_from(None, 1_000) is None


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


@pytest.mark.parametrize("status", [429, 503])
@pytest.mark.parametrize("wait", ["seconds", "date"])
def test_429_and_503_wait_as_long_as_retry_after_asks(tmp_path, server, caplog, status, wait):
    when = "2" if wait == "seconds" else email.utils.formatdate(time.time() + 2, usegmt=True)
    url = server.add("/y.csv.gz", gzip.compress(YELLOW_CSV), fail_first=1, fail_status=status,
                     fail_headers={"Retry-After": when})  # fmt: skip
    with caplog.at_level(logging.WARNING, logger="luigi_tasks.download"):
        fetch(url, tmp_path / "y.csv.gz")  # the backoff alone would wait 0.01 s
    assert server.requests["/y.csv.gz"] == 2
    [warning] = [r.getMessage() for r in logged(caplog)]
    assert re.fullmatch(rf"yellow 2020-07: {url} answered HTTP {status}; retry 1 of 2 in [12]\.\d s", warning)
    assert gzip.decompress((tmp_path / "y.csv.gz").read_bytes()) == YELLOW_CSV


def test_a_retry_after_longer_than_the_cap_fails_at_once(tmp_path, server):
    url = server.add("/y.csv.gz", b"", fail_first=10, fail_status=429, fail_headers={"Retry-After": "3600"})
    with pytest.raises(SourceError) as error:
        fetch(url, tmp_path / "y.csv.gz")
    assert str(error.value) == (
        f"yellow 2020-07: {url} answered HTTP 429 and asks to wait 3,600 s, longer than the 300 s a download "
        "waits: run it again later"
    )
    assert server.requests["/y.csv.gz"] == 1
    assert files_under(tmp_path) == []


def test_a_plain_csv_sent_with_content_encoding_gzip_is_kept_decoded(tmp_path, server):
    url = server.add("/yellow_tripdata_2020-07.csv", gzip.compress(YELLOW_CSV), headers={"Content-Encoding": "gzip"})
    fetch(url, tmp_path / "y.csv")
    assert (tmp_path / "y.csv").read_bytes() == YELLOW_CSV  # what the URL names, a plain CSV


def test_a_plain_csv_whose_content_encoding_is_false_is_refused_at_once(tmp_path, server):
    url = server.add("/yellow_tripdata_2020-07.csv", YELLOW_CSV, headers={"Content-Encoding": "gzip"})
    with pytest.raises(SourceError) as error:
        fetch(url, tmp_path / "y.csv")
    assert str(error.value) == (f"yellow 2020-07: {url} sent a body that does not decode as its Content-Encoding says")
    assert server.requests["/yellow_tripdata_2020-07.csv"] == 1  # the same bytes would come again
    assert files_under(tmp_path) == []


@pytest.mark.parametrize("kind", ["csv.gz", "parquet"])
def test_a_compressed_file_sent_with_content_encoding_gzip_is_kept_as_published(tmp_path, server, kind):
    if kind == "csv.gz":
        body = gzip.compress(YELLOW_CSV)
    else:
        sink = pa.BufferOutputStream()
        pq.write_table(pa.csv.read_csv(pa.BufferReader(YELLOW_CSV)), sink)
        body = sink.getvalue().to_pybytes()
    url = server.add(f"/yellow_tripdata_2020-07.{kind}", body, headers={"Content-Encoding": "gzip"})
    assert fetch(url, tmp_path / f"y.{kind}").size == len(body)
    assert (tmp_path / f"y.{kind}").read_bytes() == body


def test_gzip_bytes_at_a_csv_url_are_read_as_gzip(tmp_path, server):
    body = gzip.compress(YELLOW_CSV)
    url = server.add("/yellow_tripdata_2020-07.csv", body)
    assert fetch(url, tmp_path / "y.csv").size == len(body)  # the header inside was checked, the bytes kept
    assert (tmp_path / "y.csv").read_bytes() == body


@pytest.mark.parametrize("newline", [b"\r", b"\n", b"\r\n"], ids=["CR", "LF", "CRLF"])
def test_any_line_end_passes_the_header_check(tmp_path, server, newline):
    body = newline.join(YELLOW_CSV.splitlines()) * 5000  # 12 MB: the header is found in the first MiB
    url = server.add("/yellow_tripdata_2020-07.csv", body)
    assert fetch(url, tmp_path / "y.csv").size == len(body)


def test_a_host_name_that_does_not_resolve_fails_at_once_in_one_line(tmp_path, caplog):
    url = "http://user:hunter2@nonexistent.invalid/yellow_tripdata_2020-07.csv.gz?token=s3cr3t"
    with caplog.at_level(logging.WARNING, logger="luigi_tasks.download"), pytest.raises(SourceError) as error:
        fetch(url, tmp_path / "y.csv.gz")
    assert str(error.value) == (
        "yellow 2020-07: downloading http://nonexistent.invalid/yellow_tripdata_2020-07.csv.gz failed: "
        "the host name nonexistent.invalid cannot be resolved (offline, or a wrong host in the URL?)"
    )
    assert logged(caplog) == []  # no retry: another attempt cannot resolve it either
    assert files_under(tmp_path) == []


def test_a_refused_connection_is_retried_and_named(tmp_path, caplog):
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]  # bound, not listening: connections to it are refused
        url = f"http://127.0.0.1:{port}/y.csv.gz"
        with caplog.at_level(logging.WARNING, logger="luigi_tasks.download"), pytest.raises(SourceError) as error:
            fetch(url, tmp_path / "y.csv.gz")
    assert str(error.value) == (
        f"yellow 2020-07: downloading {url} failed: connection refused by 127.0.0.1:{port}; gave up after 3 attempts"
    )
    assert len(logged(caplog)) == 2  # two retries, as configured


def test_a_certificate_that_does_not_verify_fails_at_once_in_one_line(tmp_path, caplog):
    tls = SourceServer(tls=self_signed_tls(tmp_path)).start()
    try:
        url = tls.add("/y.csv.gz", gzip.compress(YELLOW_CSV))
        with caplog.at_level(logging.WARNING, logger="luigi_tasks.download"), pytest.raises(SourceError) as error:
            fetch(url, tmp_path / "raw" / "y.csv.gz")
    finally:
        tls.stop()
    assert str(error.value) == (
        f"yellow 2020-07: downloading {url} failed: the TLS certificate of 127.0.0.1 cannot be verified "
        "(self-signed certificate)"
    )
    assert logged(caplog) == []  # no retry: the same certificate would come again
    assert tls.total_requests() == 0  # refused before any request was sent
    assert files_under(tmp_path / "raw") == []


def test_a_stalled_download_times_out_is_retried_and_named(tmp_path, server):
    body = gzip.compress(YELLOW_CSV)
    url = server.add("/y.csv.gz", body, stall_after=len(body) // 2)
    with pytest.raises(SourceError) as error:
        fetch(url, tmp_path / "y.csv.gz", timeout=0.5)
    assert str(error.value) == (
        f"yellow 2020-07: downloading {url} failed: timed out: 127.0.0.1:{server.port} sent nothing for 0.5 s; "
        "gave up after 3 attempts"
    )
    assert server.requests["/y.csv.gz"] == 3
    assert files_under(tmp_path) == []
