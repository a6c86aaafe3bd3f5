"""More bad input and hostile parameters: each gives a message naming what is wrong, and leaves nothing."""

from __future__ import annotations

import datetime as dt
import decimal
import gzip
import re
import subprocess
import sys

import pyarrow as pa
import pyarrow.csv
import pyarrow.parquet as pq
import pytest

from luigi_tasks import IngestMonth, ToParquet, UploadToAzure, UploadToGCS, UploadToS3, config
from luigi_tasks.catalog import FHV, YELLOW
from luigi_tasks.convert import to_canonical_parquet
from luigi_tasks.errors import DataError, PipelineError
from luigi_tasks.sql import checked_identifier
from luigi_tasks.synthetic import write_trip_csv
from luigi_tasks.tasks.gcs import checked_prefix
from tests.conftest import (
    CSV_PATH,
    DATA,
    ZONE_FILES,
    files_under,
    luigi_command,
    luigi_settings,
    month,
    month_path,
    pipeline_settings,
    run_tasks,
    serve_csv_month,
    serve_zones,
    write_config,
)

YELLOW_HEAD = DATA / "yellow_tripdata_2020-07_head266.csv"
JULY = dt.date(2020, 7, 1)


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
    with pytest.raises(DataError) as error:
        IngestMonth(service=service, month=month("2021-01"))
    assert str(error.value) == f"IngestMonth service {service!r}: expected one of yellow, green, fhv, fhvhv"


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
        (("azure", "container"), "Trips_2020"),
        (("azure", "container"), "../etc"),
        (("azure", "container"), "two--hyphens"),
        (("azure", "account"), "account.evil.example"),
    ],
)
def test_cloud_names_from_config_follow_the_services_rules(key, value, lake, server):
    from luigi_tasks import config

    section, name = key
    with luigi_settings({key: value}), pytest.raises(DataError, match=rf"\[{section}\] {name} .* is not an? "):
        getattr(config, section)()
    upload = {"gcp": UploadToGCS, "s3": UploadToS3, "azure": UploadToAzure}[section]
    task = upload(service="yellow", month=month("2020-07"))
    with luigi_settings({key: value}), pytest.raises(DataError):  # the task fails before any request
        task.output()


def test_a_traversing_prefix_fails_the_task_before_anything_is_written(lake, server):
    settings = luigi_settings({("gcp", "bucket"): "bucket-b", ("gcp", "prefix"): "../../etc"})
    refused = pytest.raises(PipelineError, match=r"\[gcp\] prefix '../../etc' is not a plain object prefix")
    with settings, refused:
        UploadToGCS(service="yellow", month=month("2020-07")).output()


def _yellow_with(tmp_path, line: int, column: str, value: str, *, kind: str = "csv", newline: bytes = b"\n"):
    """The yellow sample five times over (1,326 lines), with `value` in `column` on `line` (1-based, header = 1)."""
    header, *rows = YELLOW_HEAD.read_bytes().splitlines()
    lines = [header, *rows * 5]
    fields = lines[line - 1].split(b",")
    fields[header.split(b",").index(column.encode())] = value.encode()
    lines[line - 1] = b",".join(fields)
    data = newline.join(lines) + newline
    raw = tmp_path / f"yellow_tripdata_2020-07.{kind}"
    raw.write_bytes(gzip.compress(data, mtime=0) if kind == "csv.gz" else data)
    return raw


@pytest.mark.parametrize(
    ("column", "value", "problem"),
    [
        ("passenger_count", "abc", "'abc' is not an integer (int64)"),
        ("passenger_count", "1.5", "'1.5' is not an integer (int64)"),
        ("tpep_pickup_datetime", "2020-07-xx 00:25:32", "'2020-07-xx 00:25:32' is not a date and time"),
        ("fare_amount", "twelve", "'twelve' is not a number"),
        ("fare_amount", "9" * 30 + "x" * 100, f"'{'9' * 30 + 'x' * 10}...' (130 characters) is not a number"),
    ],
)
@pytest.mark.parametrize("kind", ["csv", "csv.gz"])
def test_a_bad_value_names_the_line_the_column_and_the_value(tmp_path, column, value, problem, kind):
    raw = _yellow_with(tmp_path, 1234, column, value, kind=kind)
    with pytest.raises(DataError) as error:
        to_canonical_parquet(
            raw, tmp_path / "out" / "x.parquet", dataset=YELLOW, month=month("2020-07"), source_url="x"
        )
    assert str(error.value) == f"yellow 2020-07 ({raw}): line 1,234: column {column}: {problem}"
    assert files_under(tmp_path / "out") == []


@pytest.mark.parametrize("newline", [b"\r", b"\n", b"\r\n"], ids=["CR", "LF", "CRLF"])
@pytest.mark.parametrize("kind", ["csv", "csv.gz"])
def test_cr_only_lf_and_crlf_line_ends_convert_alike(tmp_path, newline, kind):
    raw = _yellow_with(tmp_path, 2, "passenger_count", "1", kind=kind, newline=newline)
    manifest = to_canonical_parquet(raw, tmp_path / "x.parquet", dataset=YELLOW, month=month("2020-07"), source_url="x")
    assert manifest.rows_out == 5 * 266
    plain = tmp_path / "plain.csv"
    plain.write_bytes(b"\n".join(YELLOW_HEAD.read_bytes().splitlines()[:2]) + b"\n")
    to_canonical_parquet(plain, tmp_path / "plain.parquet", dataset=YELLOW, month=month("2020-07"), source_url="x")
    first = pq.read_table(tmp_path / "x.parquet").slice(0, 1)
    assert first.equals(pq.read_table(tmp_path / "plain.parquet"))  # every column of the first row, exactly


def test_cr_only_line_ends_name_the_line_of_a_bad_value(tmp_path):
    raw = _yellow_with(tmp_path, 7, "passenger_count", "abc", newline=b"\r")
    with pytest.raises(DataError, match=r": line 7: column passenger_count: 'abc' is not an integer \(int64\)$"):
        to_canonical_parquet(
            raw, tmp_path / "out" / "x.parquet", dataset=YELLOW, month=month("2020-07"), source_url="x"
        )


def test_gzip_bytes_in_a_file_named_csv_are_read_as_gzip(tmp_path):
    raw = tmp_path / "yellow_tripdata_2020-07.csv"
    raw.write_bytes(gzip.compress(YELLOW_HEAD.read_bytes()))
    manifest = to_canonical_parquet(raw, tmp_path / "x.parquet", dataset=YELLOW, month=month("2020-07"), source_url="x")
    assert manifest.rows_out == 266
    assert pq.read_table(tmp_path / "x.parquet").column("PULocationID")[0].as_py() == 238  # the sample's first row


@pytest.mark.parametrize("store", ["local", "gcs", "s3", "azure"])
def test_a_refused_raw_file_is_moved_aside_and_the_next_run_downloads_it_afresh(request, store, tmp_path, lake, server):
    root = str(lake)
    if store == "gcs":
        request.getfixturevalue("gcs_env")
        root = f"gs://{request.getfixturevalue('gcs_bucket')}/lake"
    elif store == "s3":
        request.getfixturevalue("s3_env")
        root = f"s3://{request.getfixturevalue('s3_bucket')}/lake"
    elif store == "azure":
        root = f"az://{request.getfixturevalue('azure_container')}/lake"
    header, *rows = YELLOW_HEAD.read_bytes().splitlines(keepends=True)
    bad = header + b"".join(rows[:3]) + rows[3].replace(b",1,1.90,", b",abc,1.90,", 1) + b"".join(rows[4:])
    serve_csv_month(server, "yellow", "2020-07", bad)
    task = ToParquet(service="yellow", month=month("2020-07"))
    with luigi_settings({("lake", "root"): root, ("lake", "scratch"): str(tmp_path / "scratch")}):
        _, failures = run_tasks(task)
        [error] = failures.values()
        in_lake = config.lake().open()
        [kept] = [key for key in in_lake.list("") if key not in ZONE_FILES]
        assert re.fullmatch(r"raw/_refused/yellow/\d{8}T\d{6}Z_yellow_tripdata_2020-07\.csv\.gz", kept)
        assert str(error).endswith(
            ": line 5: column passenger_count: 'abc' is not an integer (int64); "
            f"the raw file is moved to {root}/{kept} and the next run downloads it again"
        )

        serve_csv_month(server, "yellow", "2020-07", YELLOW_HEAD.read_bytes())  # the source is fixed
        _, failures = run_tasks(task)
        assert failures == {}
        assert server.requests["/csv/yellow/yellow_tripdata_2020-07.csv.gz"] == 2
        assert in_lake.entry("yellow/2020/yellow_tripdata_2020-07.parquet").manifest.rows_out == 266
        assert sorted(in_lake.list("")) == sorted([
            kept,  # still there to be looked at
            "raw/yellow/_yellow_tripdata_2020-07.csv.gz.json",
            "raw/yellow/yellow_tripdata_2020-07.csv.gz",
            "yellow/2020/_yellow_tripdata_2020-07.json",
            "yellow/2020/yellow_tripdata_2020-07.parquet",
            *ZONE_FILES,
        ])  # fmt: skip
        assert in_lake.read_bytes(kept) == bad  # (pyarrow decompresses a .gz it reads)


def test_an_unresolvable_source_host_fails_the_run_at_once_in_one_line(tmp_path, server):
    settings = {
        **pipeline_settings(server, tmp_path / "lake"),
        ("tlc", "csv_url"): "http://nonexistent.invalid/{service}_tripdata_{year}-{month}.csv.gz",
        ("tlc", "zones_url"): "http://nonexistent.invalid/misc/taxi_zone_lookup.csv",
        ("tlc", "retries"): "4",
        ("tlc", "retry_backoff"): "2.0",  # the defaults: retrying would take 30 s for each file
    }
    done = luigi_command(
        ["IngestMonth", "--service", "yellow", "--month", "2020-07", "--local-scheduler"],
        write_config(tmp_path / "luigi.cfg", settings),
    )
    assert done.returncode == 30, done.stderr  # [retcode] task_failed
    message = (
        "yellow 2020-07: downloading http://nonexistent.invalid/yellow_tripdata_2020-07.csv.gz failed: "
        "the host name nonexistent.invalid cannot be resolved (offline, or a wrong host in the URL?)"
    )
    worker, summary = [line for line in done.stderr.splitlines() if "nonexistent.invalid/yellow" in line]
    assert worker.endswith(f" failed    DownloadTripData(service=yellow, month=2020-07): {message}")
    assert summary == f"    failed: DownloadTripData: {message}"
    assert "retry" not in done.stderr and "Traceback" not in done.stderr  # failed at the first attempt
    assert files_under(tmp_path / "lake") == []


# --- values the TLC's files and their copies hold, read as they are meant --------------------------------------------


def _fhv_parquet(path, **columns) -> None:
    base = {
        "dispatching_base_num": pa.array(["B1", "B2", "B3"]),
        "pickup_datetime": pa.array([dt.datetime(2021, 3, 1, 8), dt.datetime(2021, 3, 2, 9), dt.datetime(2021, 3, 3)]),
        "dropOff_datetime": pa.array(
            [dt.datetime(2021, 3, 1, 9), dt.datetime(2021, 3, 2, 10), dt.datetime(2021, 3, 4)]
        ),
        "PUlocationID": pa.array([1.0, 2.0, 3.0]),
        "DOlocationID": pa.array([4.0, 5.0, 6.0]),
    }
    pq.write_table(pa.table({**base, **columns}), path)


def test_nan_in_a_double_code_column_is_null_and_counted(tmp_path):
    raw = tmp_path / "fhv_tripdata_2021-03.parquet"
    _fhv_parquet(raw, PUlocationID=pa.array([1.0, float("nan"), None]), DOlocationID=pa.array([float("nan")] * 3))
    out = tmp_path / "out" / "fhv.parquet"
    manifest = to_canonical_parquet(raw, out, dataset=FHV, month=month("2021-03"), source_url="x")
    table = pq.read_table(out)
    assert table.column("PULocationID").to_pylist() == [1, None, None]
    assert table.column("DOLocationID").to_pylist() == [None, None, None]
    assert table.schema.field("PULocationID").type == pa.int64()
    assert manifest.rows_out == 3
    assert manifest.nan_codes_as_null == {"DOLocationID": 3, "PULocationID": 1}


def test_nan_text_in_a_csv_code_column_is_null_and_counted(tmp_path):
    lines = YELLOW_HEAD.read_text().splitlines()
    header = lines[0].split(",")
    row = lines[1].split(",")
    row[header.index("passenger_count")] = "NaN"
    lines[1] = ",".join(row)
    raw = tmp_path / "yellow_tripdata_2020-07.csv"
    raw.write_text("\n".join(lines) + "\n")
    out = tmp_path / "out" / "yellow.parquet"
    manifest = to_canonical_parquet(raw, out, dataset=YELLOW, month=month("2020-07"), source_url="x")
    assert pq.read_table(out).column("passenger_count")[0].as_py() is None
    assert manifest.nan_codes_as_null == {"passenger_count": 1}
    assert manifest.rows_out == len(lines) - 1


def test_decimal_money_keeps_its_decimal_value(tmp_path):
    raw = tmp_path / "yellow_tripdata_2021-03.parquet"
    csv_table = pa.csv.read_csv(YELLOW_HEAD).slice(0, 3)
    fares = pa.array(
        [decimal.Decimal("14.20"), decimal.Decimal("0.10"), decimal.Decimal("-52.70")], pa.decimal128(12, 2)
    )
    pq.write_table(csv_table.set_column(csv_table.schema.get_field_index("fare_amount"), "fare_amount", fares), raw)
    out = tmp_path / "out" / "yellow.parquet"
    to_canonical_parquet(raw, out, dataset=YELLOW, month=month("2020-07"), source_url="x")
    assert pq.read_table(out).column("fare_amount").to_pylist() == [14.2, 0.1, -52.7]


def test_int96_times_are_read_to_the_microsecond_with_the_year_3019_dropoff(tmp_path):
    raw = tmp_path / "fhv_tripdata_2021-03.parquet"
    dropoffs = [dt.datetime(2021, 3, 1, 9, 0, 0, 123456), dt.datetime(3019, 2, 28, 23, 59), dt.datetime(2021, 3, 4)]
    table = pa.table(
        {
            "dispatching_base_num": pa.array(["B1", "B2", "B3"]),
            "pickup_datetime": pa.array([dt.datetime(2021, 3, 1, 8)] * 3, pa.timestamp("us")),
            "dropOff_datetime": pa.array(dropoffs, pa.timestamp("us")),
            "PUlocationID": pa.array([1, 2, 3]),
            "DOlocationID": pa.array([4, 5, 6]),
        }
    )
    pq.write_table(table, raw, use_deprecated_int96_timestamps=True)  # as Spark and Hive write times
    assert pq.ParquetFile(raw).schema.column(2).physical_type == "INT96"
    out = tmp_path / "out" / "fhv.parquet"
    to_canonical_parquet(raw, out, dataset=FHV, month=month("2021-03"), source_url="x")
    assert pq.read_table(out).column("dropoff_datetime").to_pylist() == dropoffs


def test_an_empty_trailing_column_of_a_csv_is_dropped(tmp_path):
    lines = YELLOW_HEAD.read_text().splitlines()
    raw = tmp_path / "yellow_tripdata_2020-07.csv"
    raw.write_text("".join(line + ",\n" for line in lines))
    out = tmp_path / "out" / "yellow.parquet"
    manifest = to_canonical_parquet(raw, out, dataset=YELLOW, month=month("2020-07"), source_url="x")
    expected = pa.csv.read_csv(YELLOW_HEAD)
    assert manifest.rows_out == expected.num_rows == pq.read_metadata(out).num_rows
    assert manifest.columns_dropped == ("",)
    assert pq.read_table(out).column("total_amount").to_pylist() == expected.column("total_amount").to_pylist()


def test_a_csv_gz_gzipped_twice_is_named_so(tmp_path, server):
    raw = tmp_path / "yellow_tripdata_2020-07.csv.gz"
    raw.write_bytes(gzip.compress(gzip.compress(YELLOW_HEAD.read_bytes(), mtime=0), mtime=0))
    with pytest.raises(DataError) as raised:
        to_canonical_parquet(
            raw, tmp_path / "out" / "x.parquet", dataset=YELLOW, month=month("2020-07"), source_url="x"
        )
    assert str(raised.value) == (
        f"yellow 2020-07 ({raw}): the file is gzip data inside gzip data (compressed twice, e.g. by a server):"
        " decompress it once more, or serve it compressed once"
    )
    assert files_under(tmp_path / "out") == []
    # The download's check says the same before the file is kept.
    serve_zones(server)
    serve_csv_month(server, "yellow", "2020-07", gzip.compress(YELLOW_HEAD.read_bytes(), mtime=0))
    settings = pipeline_settings(server, tmp_path / "lake")
    with luigi_settings(settings):
        result, failures = run_tasks(ToParquet(service="yellow", month=month("2020-07")))
    assert not result.scheduling_succeeded
    (failure,) = failures.values()
    assert str(failure).startswith("yellow 2020-07: ")
    assert str(failure).endswith(
        " is gzip data inside gzip data (compressed twice, e.g. by a server): decompress it once more, or serve it"
        " compressed once"
    )
    assert [f for f in files_under(tmp_path / "lake") if "yellow" in f] == []


def test_gzip_followed_by_zero_padding_is_read_as_gunzip_reads_it(tmp_path, server):
    padded = gzip.compress(YELLOW_HEAD.read_bytes(), mtime=0) + bytes(4096)
    assert subprocess.run(["gunzip", "-c"], input=padded, capture_output=True).stdout == YELLOW_HEAD.read_bytes()
    serve_zones(server)
    server.add(month_path(CSV_PATH, "yellow", "2020-07"), padded)
    settings = pipeline_settings(server, tmp_path / "lake")
    with luigi_settings(settings):
        result, failures = run_tasks(ToParquet(service="yellow", month=month("2020-07")))
    assert failures == {}
    lake_file = tmp_path / "lake" / "yellow" / "2020" / "yellow_tripdata_2020-07.parquet"
    assert pq.read_metadata(lake_file).num_rows == pa.csv.read_csv(YELLOW_HEAD).num_rows == 266


def test_an_empty_parquet_source_says_it_has_no_rows(tmp_path):
    raw = tmp_path / "fhv_tripdata_2021-03.parquet"
    _fhv_parquet(raw)
    pq.write_table(pq.read_table(raw).slice(0, 0), raw)
    with pytest.raises(DataError) as raised:
        to_canonical_parquet(raw, tmp_path / "out" / "x.parquet", dataset=FHV, month=month("2021-03"), source_url="x")
    assert str(raised.value) == f"fhv 2021-03 ({raw}): the Parquet file has no rows"
    assert files_under(tmp_path / "out") == []
