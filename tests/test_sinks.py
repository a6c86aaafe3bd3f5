"""Every sink answers "done?" the same way for one task and in bulk: when the month is there, when its copy
there is corrupted, and when it is gone; a rerun repairs what is wrong and --reload replaces it exactly."""

from __future__ import annotations

import duckdb
import psycopg2
import pytest

from luigi_tasks import config, history
from luigi_tasks.catalog import ZONES, service
from luigi_tasks.lake import canonical_key
from luigi_tasks.tasks.ingest import IngestMonth
from luigi_tasks.tasks.sinks import SINKS, done_by_sink, sink_task
from tests.conftest import DATA, luigi_settings, month, run_tasks, serve_csv_month, serve_zones
from tests.emulators import PROJECT

YELLOW = service("yellow")
JULY = month("2020-07")
ROWS = 266  # rows of the sample month


@pytest.fixture
def every_sink(pg_lake, server, gcs_bucket, bigquery_env, bigquery_dataset, s3_env, s3_bucket, request):
    serve_csv_month(server, "yellow", "2020-07", (DATA / "yellow_tripdata_2020-07_head266.csv").read_bytes())
    serve_zones(server)
    settings = {
        ("gcp", "project"): PROJECT,
        ("gcp", "bucket"): gcs_bucket,
        ("gcp", "dataset"): bigquery_dataset,
        ("s3", "bucket"): s3_bucket,
    }
    callspec = getattr(request.node, "callspec", None)
    if (callspec.params.get("sink") if callspec else None) in ("azure", None):  # Azurite only where it is used
        settings[("azure", "container")] = request.getfixturevalue("azure_container")
    with luigi_settings(settings):
        yield pg_lake


def answers(sink: str) -> tuple[bool, bool]:
    """(the task's own check, the bulk check) for July and for the zone lookup together."""
    per_task = sink_task(sink, "yellow", JULY).complete() and sink_task(sink, None, None).complete()
    bulk = (
        JULY in done_by_sink(YELLOW, [JULY], (sink,))[1][sink] and None in done_by_sink(ZONES, [None], (sink,))[1][sink]
    )
    return per_task, bulk


def damage(sink: str, how: str, request) -> None:
    """Corrupt ('corrupt') or remove ('remove') July's copy in a sink, as a disk, a person or a bug might."""
    lake = config.lake().open()
    key = canonical_key(YELLOW, JULY)
    mirror_key = f"raw/{key}"  # [gcp] prefix, [s3] prefix and [azure] prefix default to raw
    if sink == "lake":
        path = lake.local_path(key)
        if how == "corrupt":
            path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])  # cut in half
        else:
            path.unlink()
    elif sink == "postgres":
        with psycopg2.connect(config.postgres().dsn) as conn, conn.cursor() as cur:
            if how == "corrupt":
                cur.execute("DROP TABLE yellow_tripdata_2020_07")  # the month's rows gone, its marker left
            else:
                cur.execute("DELETE FROM table_updates WHERE update_id = 'yellow_tripdata:2020-07'")
    elif sink == "duckdb":
        with duckdb.connect(str(config.duckdb().file)) as conn:
            if how == "corrupt":  # some of the month's rows gone, its marker left
                conn.execute("DELETE FROM prod.yellow_tripdata WHERE source_month = DATE '2020-07-01' AND VendorID = 1")
            else:
                conn.execute("DELETE FROM prod.table_updates WHERE update_id = 'yellow_tripdata:2020-07'")
    elif sink == "gcs":
        blob = request.getfixturevalue("gcs_client").bucket(config.gcp().bucket).blob(mirror_key)
        blob.upload_from_string(b"not the month") if how == "corrupt" else blob.delete()
    elif sink == "bigquery":
        where = "source_month = DATE '2020-07-01'" + (" AND VendorID = 1" if how == "corrupt" else "")
        table = f"{config.gcp().dataset}.yellow_tripdata"
        request.getfixturevalue("bigquery_client").query(f"DELETE FROM `{table}` WHERE {where}").result()
    elif sink == "s3":
        client, bucket = request.getfixturevalue("s3_client"), config.s3().bucket
        if how == "corrupt":
            client.put_object(Bucket=bucket, Key=mirror_key, Body=b"not the month")
        else:
            client.delete_object(Bucket=bucket, Key=mirror_key)
    elif sink == "azure":
        blob = request.getfixturevalue("azure_client").get_blob_client(config.azure().container, mirror_key)
        blob.upload_blob(b"not the month", overwrite=True) if how == "corrupt" else blob.delete_blob()
    else:
        raise AssertionError(f"no way to damage the {sink} sink: add one with the sink")


def ingest(sink: str, reload: bool = False) -> None:
    result, failures = run_tasks(IngestMonth(service="yellow", month=JULY, sinks=("lake", sink), reload=reload))
    assert failures == {}, failures
    assert result.scheduling_succeeded, result.summary_text


@pytest.mark.parametrize("sink", list(SINKS))
def test_a_sinks_own_check_and_its_bulk_check_agree(sink, every_sink, request):
    ingest(sink)
    assert answers(sink) == (True, True)
    for how in ("corrupt", "remove"):
        damage(sink, how, request)
        assert answers(sink) == (False, False), how
        ingest(sink)  # a plain rerun repairs it
        assert answers(sink) == (True, True), how
    entry = config.lake().open().entry(canonical_key(YELLOW, JULY))
    assert entry.manifest.rows_out == ROWS


@pytest.mark.parametrize("sink", list(SINKS))
def test_reload_puts_the_month_into_every_sink_again(sink, every_sink):
    ingest(sink)
    task_id = sink_task(sink, "yellow", JULY).task_id
    runs_before = [r for r in history.runs(config.history().file, limit=1000) if r["task_id"] == task_id]
    ingest(sink, reload=True)
    runs_after = [r for r in history.runs(config.history().file, limit=1000) if r["task_id"] == task_id]
    assert [r["status"] for r in runs_after] == ["DONE"] * (len(runs_before) + 1)
    assert answers(sink) == (True, True)
