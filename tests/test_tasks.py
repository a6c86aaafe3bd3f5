"""The Luigi graph end to end: IngestMonth into the local lake, reruns, failures, the command line."""

from __future__ import annotations

import json
from pathlib import Path

import luigi
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from luigi_tasks import DownloadTripData, IngestMonth, ToParquet, ZonesToParquet
from luigi_tasks.catalog import FHV, YELLOW
from luigi_tasks.convert import Manifest, read_manifest
from luigi_tasks.download import SourceVersion
from luigi_tasks.errors import DataError
from luigi_tasks.lake import LakeEntry
from luigi_tasks.synthetic import write_trip_csv
from luigi_tasks.tasks.base import ProgressReporter
from tests.conftest import (
    DATA,
    PARQUET_PATH,
    REPO,
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

YELLOW_HEAD = (DATA / "yellow_tripdata_2020-07_head266.csv").read_bytes()


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    return {p: ((root / p).stat().st_ino, (root / p).stat().st_mtime_ns) for p in files_under(root)}


def test_ingest_month_fills_the_lake_and_a_rerun_does_nothing(lake, server):
    serve_csv_month(server, "yellow", "2020-07", YELLOW_HEAD)
    serve_zones(server)
    result, failures = run_tasks(IngestMonth(service="yellow", month=month("2020-07")))
    assert result.status == luigi.LuigiStatusCode.SUCCESS, result.summary_text
    assert failures == {}
    assert files_under(lake) == [
        "raw/yellow/_yellow_tripdata_2020-07.csv.gz.json",  # the source's validators of the download
        "raw/yellow/yellow_tripdata_2020-07.csv.gz",
        "raw/zones/_taxi_zone_lookup.csv.json",
        "raw/zones/taxi_zone_lookup.csv",
        "yellow/2020/_yellow_tripdata_2020-07.json",
        "yellow/2020/yellow_tripdata_2020-07.parquet",
        "zones/_taxi_zone_lookup.json",
        "zones/taxi_zone_lookup.parquet",
    ]
    table = pq.read_table(lake / "yellow/2020/yellow_tripdata_2020-07.parquet")
    assert (table.schema, table.num_rows) == (YELLOW.schema, 266)
    manifest = read_manifest(lake / "yellow/2020/yellow_tripdata_2020-07.parquet")
    assert manifest.source_url == server.base_url + "/csv/yellow/yellow_tripdata_2020-07.csv.gz"
    assert pq.read_table(lake / "zones/taxi_zone_lookup.parquet").num_rows == 265

    requests, files = server.total_requests(), snapshot(lake)
    assert requests == 2
    result, _ = run_tasks(IngestMonth(service="yellow", month=month("2020-07")))
    assert result.status == luigi.LuigiStatusCode.SUCCESS
    assert "complete ones were encountered" in result.summary_text
    assert server.total_requests() == requests  # nothing downloaded again
    assert snapshot(lake) == files  # nothing rewritten


def test_convert_again_without_downloading_when_only_the_parquet_is_gone(lake, server):
    serve_csv_month(server, "yellow", "2020-07", YELLOW_HEAD)
    run_tasks(ToParquet(service="yellow", month=month("2020-07")))
    (lake / "yellow/2020/yellow_tripdata_2020-07.parquet").unlink()
    result, _ = run_tasks(ToParquet(service="yellow", month=month("2020-07")))
    assert result.scheduling_succeeded
    assert server.total_requests() == 2  # the month and the zone lookup, once each
    assert (lake / "yellow/2020/yellow_tripdata_2020-07.parquet").exists()


@pytest.mark.parametrize("keep_raw", ["true", "false"])
def test_the_sources_validators_are_in_the_manifest_whether_or_not_the_raw_file_is_kept(lake, server, keep_raw):
    url = serve_csv_month(server, "yellow", "2020-07", YELLOW_HEAD)
    route = server.routes[url.removeprefix(server.base_url)]
    with luigi_settings({("lake", "keep_raw"): keep_raw}):
        assert run_tasks(ToParquet(service="yellow", month=month("2020-07")))[1] == {}
    entry = LakeEntry.from_json((lake / "yellow/2020/_yellow_tripdata_2020-07.json").read_bytes())
    assert entry.manifest.source_version == SourceVersion(route.etag, route.last_modified, len(route.body))
    assert read_manifest(lake / "yellow/2020/yellow_tripdata_2020-07.parquet").source_version is not None  # footer
    raw = ["raw/yellow/_yellow_tripdata_2020-07.csv.gz.json", "raw/yellow/yellow_tripdata_2020-07.csv.gz"]
    assert [f for f in files_under(lake) if f.startswith("raw/yellow/")] == (raw if keep_raw == "true" else [])


def test_a_manifest_written_before_validators_were_recorded_still_reads():
    manifest = dict(
        dataset="yellow", month="2020-07", source_url="u", source_bytes=10, source_sha256="s", rows_in=1, rows_out=1,
        rows_outside_month=0, rows_without_pickup=0, min_pickup=None, max_pickup=None, columns_filled_null=[],
        columns_dropped=[],
    )  # fmt: skip
    assert Manifest.from_json(json.dumps(manifest)).source_version is None


def test_parquet_source_and_csv_source_give_the_same_schema(tmp_path, server):
    csv_lake, parquet_lake = tmp_path / "csv", tmp_path / "parquet"
    serve_csv_month(server, "yellow", "2020-07", YELLOW_HEAD)
    serve_zones(server)
    with luigi_settings(pipeline_settings(server, csv_lake)):
        run_tasks(ToParquet(service="yellow", month=month("2020-07")))
    # The TLC's parquet for the same month: take what the CSV gave, in the TLC's own spelling.
    tlc_file = tmp_path / "tlc.parquet"
    table = pq.read_table(csv_lake / "yellow/2020/yellow_tripdata_2020-07.parquet")
    pq.write_table(table.drop(["cbd_congestion_fee"]).rename_columns(
        [n if n != "airport_fee" else "Airport_fee" for n in table.drop(["cbd_congestion_fee"]).column_names]
    ), tlc_file)  # fmt: skip
    server.add(month_path(PARQUET_PATH, "yellow", "2020-07"), tlc_file.read_bytes())
    with luigi_settings(pipeline_settings(server, parquet_lake, source="parquet")):
        result, failures = run_tasks(ToParquet(service="yellow", month=month("2020-07")))
    assert failures == {}
    assert files_under(parquet_lake) == sorted([
        "raw/yellow/_yellow_tripdata_2020-07.parquet.json",
        "raw/yellow/yellow_tripdata_2020-07.parquet",
        "yellow/2020/_yellow_tripdata_2020-07.json",
        "yellow/2020/yellow_tripdata_2020-07.parquet",
        *ZONE_FILES,
    ])  # fmt: skip
    csv_month, parquet_month = (pq.read_table(root / "yellow/2020/yellow_tripdata_2020-07.parquet")
                                for root in (csv_lake, parquet_lake))  # fmt: skip
    assert parquet_month.equals(csv_month)
    assert read_manifest(parquet_lake / "yellow/2020/yellow_tripdata_2020-07.parquet").rows_in == 266


def test_not_published_month_fails_with_its_url_and_leaves_nothing(lake, server):
    result, failures = run_tasks(ToParquet(service="yellow", month=month("2031-01")))
    assert not result.scheduling_succeeded
    url = server.base_url + "/csv/yellow/yellow_tripdata_2031-01.csv.gz"
    [error] = failures.values()
    assert str(error) == f"yellow 2031-01 is not published at {url} (HTTP 404)"
    assert files_under(lake) == ZONE_FILES


def _with_surge_fee() -> bytes:
    lines = YELLOW_HEAD.split(b"\n")
    return b"\n".join([lines[0] + b",surge_fee"] + [line + b",1.25" for line in lines[1:]])


def test_a_new_column_is_kept_after_the_canonical_ones(lake, server):
    serve_csv_month(server, "yellow", "2020-07", _with_surge_fee())
    assert run_tasks(ToParquet(service="yellow", month=month("2020-07")))[1] == {}
    lake_file = lake / "yellow" / "2020" / "yellow_tripdata_2020-07.parquet"
    table = pq.read_table(lake_file)
    assert table.schema.names == [*YELLOW.schema.names, "surge_fee"]
    assert table.schema.field("surge_fee").type == pa.string()  # a CSV says nothing of its type
    assert set(table.column("surge_fee").to_pylist()) == {"1.25"}
    assert read_manifest(lake_file).columns_added == {"surge_fee": "string"}


@pytest.mark.parametrize("setting", [("new_columns", "refuse"), ("unknown_columns", "error")])
def test_new_columns_refused_by_config_fail_the_month_naming_them(lake, server, setting):
    url = serve_csv_month(server, "yellow", "2020-07", _with_surge_fee())
    parser = luigi.configuration.get_config()
    written = parser.get("tlc", "new_columns", None)
    parser.remove_option("tlc", "new_columns")  # a config file of an older release sets unknown_columns only
    try:
        with luigi_settings({("tlc", setting[0]): setting[1]}):
            _, failures = run_tasks(ToParquet(service="yellow", month=month("2020-07")))
    finally:
        if written is not None:
            parser.set("tlc", "new_columns", written)
    [error] = failures.values()
    assert str(error).startswith(f"yellow 2020-07 ({url}): unknown column 'surge_fee'")
    assert str(error).endswith("; [tlc] new_columns = keep keeps such columns")
    assert files_under(lake) == ZONE_FILES


def test_bad_parameters_are_refused_before_anything_runs():
    with pytest.raises(DataError) as error:
        IngestMonth(service="taxi", month=month("2021-01"))
    assert str(error.value) == "IngestMonth service 'taxi': expected one of yellow, green, fhv, fhvhv"
    with pytest.raises(DataError, match="the TLC publishes fhvhv from 2019-02 on"):
        ToParquet(service="fhvhv", month=month("2019-01"))
    with pytest.raises(DataError) as error:
        IngestMonth(service="yellow", month=month("2021-01"), sinks="lake,warehouse")
    assert str(error.value) == (
        "IngestMonth sinks 'lake,warehouse': expected one or more of lake, postgres, duckdb, gcs, bigquery, s3,"
        " azure, separated by commas"
    )
    with pytest.raises(DataError) as error:
        IngestMonth.month.parse("2021-13")
    assert str(error.value) == "--month '2021-13': expected YYYY-MM (e.g. 2021-01) or latest"


def test_progress_reaches_the_scheduler_at_most_once_a_percent():
    class Recorder:
        task_family, label = "DownloadTripData", "yellow 2021-01"

        def __init__(self):
            self.percentages, self.messages = [], []

        def set_progress_percentage(self, value):
            self.percentages.append(value)

        def set_status_message(self, value):
            self.messages.append(value)

    task = Recorder()
    report = ProgressReporter(task, unit="MiB", scale=2**20)
    total = 300 * 2**20
    for done in range(0, total + 1, 2**20 // 4):
        report(done, total)
    assert task.percentages == list(range(101))
    assert task.messages[-1] == "300 of 300 MiB"


def test_readme_command_makes_the_canonical_parquet(tmp_path, server):
    month_csv = write_trip_csv(tmp_path / "m.csv.gz", YELLOW, month("2021-01"), 200_000, seed=11)
    server.add(month_path("/csv/{service}/{service}_tripdata_{year}-{month}.csv.gz", "yellow", "2021-01"),
               month_csv.read_bytes())  # fmt: skip
    serve_zones(server)
    config = write_config(tmp_path / "luigi.cfg", pipeline_settings(server, tmp_path / "lake"))
    args = ["IngestMonth", "--service", "yellow", "--month", "2021-01", "--local-scheduler"]
    done = luigi_command(args, config)
    assert done.returncode == 0, done.stderr
    assert ":)" in done.stderr  # luigi's summary: every task ran successfully
    out = tmp_path / "lake/yellow/2021/yellow_tripdata_2021-01.parquet"
    assert pq.read_metadata(out).num_rows == 200_000
    assert pq.read_metadata(out).num_row_groups == 2

    again = luigi_command(args, config)
    assert again.returncode == 0
    assert "were encountered:\n    - 1 IngestMonth(service=yellow, month=2021-01, sinks=lake)" in again.stderr
    assert "Did not run any tasks" in again.stderr
    assert server.total_requests() == 2


def test_command_line_failure_exits_non_zero_with_the_reason(tmp_path, server):
    config = write_config(tmp_path / "luigi.cfg", pipeline_settings(server, tmp_path / "lake"))
    done = luigi_command(["IngestMonth", "--service", "fhv", "--month", "2031-01", "--local-scheduler"], config)
    assert done.returncode == 30  # [retcode] task_failed in the shipped luigi.cfg
    assert "fhv 2031-01 is not published at http://127.0.0.1:" in done.stderr
    bad = luigi_command(["IngestMonth", "--service", "yellow", "--month", "2021-13", "--local-scheduler"], config)
    assert bad.returncode == 40
    assert "--month '2021-13': expected YYYY-MM (e.g. 2021-01) or latest" in bad.stderr


def test_download_task_output_follows_the_source_family(tmp_path, server):
    with luigi_settings(pipeline_settings(server, tmp_path, source="parquet")):
        assert (
            DownloadTripData(service="fhv", month=month("2020-01"))
            .output()
            .path.endswith("raw/fhv/fhv_tripdata_2020-01.parquet")
        )
    with luigi_settings(pipeline_settings(server, tmp_path, source="csv")):
        assert ZonesToParquet().output().path == str(tmp_path / "zones/taxi_zone_lookup.parquet")
        assert FHV.name in DownloadTripData(service="fhv", month=month("2020-01")).output().path


def test_bin_ingest_month(tmp_path, server):
    serve_csv_month(server, "yellow", "2020-07", YELLOW_HEAD)
    serve_zones(server)
    config = write_config(tmp_path / "luigi.cfg", pipeline_settings(server, tmp_path / "lake"))
    done = luigi_command(["yellow", "2020-07"], config, program=[str(REPO / "bin/ingest-month")])
    assert done.returncode == 0, done.stderr
    assert pq.read_metadata(tmp_path / "lake/yellow/2020/yellow_tripdata_2020-07.parquet").num_rows == 266
    usage = luigi_command([], config, program=[str(REPO / "bin/ingest-month")])
    assert usage.returncode == 2 and "usage: ingest-month SERVICE YYYY-MM" in usage.stderr
