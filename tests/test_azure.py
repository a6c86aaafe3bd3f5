"""The Azure sink and the Azure uploads against Azurite, through the official client."""

from __future__ import annotations

import base64
import json

import luigi
import pytest

from luigi_tasks import UploadToAzure
from luigi_tasks import azure as azure_work
from luigi_tasks.catalog import YELLOW
from luigi_tasks.errors import PipelineError
from luigi_tasks.files import fingerprints_of
from luigi_tasks.lake import canonical_key, entry_key
from luigi_tasks.tasks.sinks import SINKS, done_by_sink, sink_task
from tests.conftest import DATA, luigi_settings, month, run_tasks, serve_csv_month
from tests.emulators import AZURITE_KEY

YELLOW_HEAD = (DATA / "yellow_tripdata_2020-07_head266.csv").read_bytes()
JULY = month("2020-07")
NAME = "raw/yellow/2020/yellow_tripdata_2020-07.parquet"


@pytest.fixture
def mirror(lake, server, azure_container):
    """The lake fixture plus [azure] container, a fresh one in Azurite."""
    serve_csv_month(server, "yellow", "2020-07", YELLOW_HEAD)
    with luigi_settings({("azure", "container"): azure_container}):
        yield lake


def test_the_mirror_uploads_once_with_the_manifests_md5(mirror, azure_client, azure_container):
    result, failures = run_tasks(UploadToAzure(service="yellow", month=JULY))
    assert failures == {} and result.status == luigi.LuigiStatusCode.SUCCESS
    local = mirror / "yellow/2020/yellow_tripdata_2020-07.parquet"
    blob = azure_client.get_blob_client(azure_container, NAME)
    props = blob.get_blob_properties()
    manifest = json.loads((mirror / entry_key(canonical_key(YELLOW, JULY))).read_bytes())
    assert base64.b64encode(props.content_settings.content_md5).decode() == manifest["file"]["md5"]
    assert props.size == manifest["file"]["size"] == local.stat().st_size
    assert blob.download_blob().readall() == local.read_bytes()

    result, _ = run_tasks(UploadToAzure(service="yellow", month=JULY))
    assert "Did not run any tasks" in result.summary_text
    assert blob.get_blob_properties().etag == props.etag


def test_a_large_file_goes_in_blocks_and_a_dead_uploads_blocks_do_no_harm(azure_env, azure_client, azure_container,
                                                                         tmp_path):  # fmt: skip
    big = tmp_path / "big.bin"
    big.write_bytes(bytes(range(256)) * 80_000)  # 20 MB: three 8 MiB blocks
    service = azure_work.client(azure_work.account())
    blob = azure_client.get_blob_client(azure_container, "x/big.bin")
    blob.stage_block(azure_work._block_ids()(0), b"a dead upload's block")  # staged, never committed
    assert [b.name for b in azure_client.get_container_client(azure_container).list_blobs()] == []
    assert azure_work.upload_file(service, big, azure_container, "x/big.bin") is True
    committed, uncommitted = blob.get_block_list("all")
    assert (len(committed), len(uncommitted)) == (3, 0)  # the commit dropped the dead upload's block
    assert blob.download_blob().readall() == big.read_bytes()
    assert azure_work.upload_file(service, big, azure_container, "x/big.bin") is False  # same bytes: skipped


def test_a_manifest_older_than_its_md5_is_compared_by_crc32c(mirror, azure_container):
    result, failures = run_tasks(UploadToAzure(service="yellow", month=JULY))
    assert failures == {}
    manifest_path = mirror / entry_key(canonical_key(YELLOW, JULY))
    entry = json.loads(manifest_path.read_bytes())
    del entry["file"]["md5"]  # written before manifests recorded it
    manifest_path.write_text(json.dumps(entry))
    assert sink_task("azure", "yellow", JULY).complete()
    assert JULY in done_by_sink(YELLOW, [JULY], ("azure",))[1]["azure"]
    result, _ = run_tasks(UploadToAzure(service="yellow", month=JULY))
    assert "Did not run any tasks" in result.summary_text


def test_a_lake_in_the_mirrors_container_makes_the_sink_add_nothing(mirror, azure_container, tmp_path):
    root = f"az://{azure_container}/lake"
    with luigi_settings({("lake", "root"): root, ("lake", "scratch"): str(tmp_path / "scratch")}):
        task = SINKS["azure"].month_task("yellow", JULY)
        assert type(task).__name__ == "ToParquet"
        result, failures = run_tasks(task)
        assert failures == {}
        entries, done = done_by_sink(YELLOW, [JULY], ("azure",))
        assert done["azure"] == set(entries) == {JULY}
    other = {("azure", "container"): "another-container", ("lake", "root"): root}
    with luigi_settings({**other, ("lake", "scratch"): str(tmp_path / "scratch")}):
        assert type(SINKS["azure"].month_task("yellow", JULY)).__name__ == "UploadToAzure"


def test_a_missing_container_or_a_refused_key_is_one_line_without_the_key(mirror, monkeypatch, azurite_server):
    with luigi_settings({("azure", "container"): "no-such-container"}):
        result, failures = run_tasks(UploadToAzure(service="yellow", month=JULY))
    assert not result.scheduling_succeeded
    text = result.summary_text + "".join(map(str, failures.values()))
    assert "Azure container no-such-container does not exist" in text

    wrong = AZURITE_KEY[:-8] + "AAAAAAA="
    connection = azurite_server.connection_string().replace(AZURITE_KEY, wrong)
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", connection)
    with pytest.raises(PipelineError) as raised:
        azure_work.upload_file(azure_work.client(azure_work.account()), DATA / "taxi_zone_lookup.csv", "c0ntainer", "x")
    message = str(raised.value)
    assert "\n" not in message and wrong not in message and "AccountKey" not in message
    assert "HTTP 403" in message


def test_the_upload_fingerprint_is_the_files_md5(tmp_path):
    path = tmp_path / "f.bin"
    path.write_bytes(b"abc")
    assert fingerprints_of(path).md5 == "kAFQmDzST7DWlj99KOF/cg=="  # base64 of md5("abc"), as Content-MD5
