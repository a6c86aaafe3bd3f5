"""Bad settings are refused before any work, in one line naming the setting, its value and what was expected."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from luigi_tasks import config
from luigi_tasks.errors import DataError
from luigi_tasks.lake import Lake
from tests.conftest import (
    CSV_PATH,
    DATA,
    files_under,
    luigi_command,
    luigi_settings,
    month_path,
    pipeline_settings,
    serve_zones,
    write_config,
)

TEMPLATE = "expected a URL template with {service}, {year} and {month} and no other placeholder"
CSV = "http://127.0.0.1:9/csv/{service}/{service}_tripdata_{year}-{month}.csv.gz"


@pytest.mark.parametrize(
    ("section", "key", "value", "message"),
    [
        ("tlc", "csv_url", "http://h/{service}_{year}.csv.gz",
         f"[tlc] csv_url 'http://h/{{service}}_{{year}}.csv.gz' lacks {{month}}: {TEMPLATE}"),
        ("tlc", "parquet_url", "http://h/trips-{month}.parquet",
         f"[tlc] parquet_url 'http://h/trips-{{month}}.parquet' lacks {{service}} and {{year}}: {TEMPLATE}"),
        ("tlc", "csv_url", CSV.replace("{month}", "{mon}"),
         f"[tlc] csv_url '{CSV.replace('{month}', '{mon}')}' has an unknown placeholder {{mon}}: {TEMPLATE}"),
        ("tlc", "csv_url", CSV.replace("{month}", "{month:>3}"),
         f"[tlc] csv_url '{CSV.replace('{month}', '{month:>3}')}' has an unknown placeholder {{month:>3}}: {TEMPLATE}"),
        ("tlc", "csv_url", CSV.replace("{month}", "{month"),
         f"[tlc] csv_url '{CSV.replace('{month}', '{month')}' is not a valid template"
         f" (expected '}}' before end of string): {TEMPLATE}"),
        # A signed URL's query string is a secret: the message shows the URL without it.
        ("tlc", "csv_url", "http://h/{service}/{year}.csv.gz?sig=url-secret",
         f"[tlc] csv_url 'http://h/{{service}}/{{year}}.csv.gz' lacks {{month}}: {TEMPLATE}"),
        ("tlc", "retries", "-1", "[tlc] retries -1 is out of range: expected 0 or more retries"),
        ("tlc", "retry_backoff", "-0.5", "[tlc] retry_backoff -0.5 is out of range: expected 0 or more seconds"),
        ("tlc", "timeout", "0", "[tlc] timeout 0.0 is out of range: expected more than 0 seconds"),
        ("tlc", "timeout", "-3", "[tlc] timeout -3.0 is out of range: expected more than 0 seconds"),
        ("lake", "row_group_rows", "0", "[lake] row_group_rows 0 is out of range: expected 1 or more rows"),
        ("lake", "row_group_rows", "-5", "[lake] row_group_rows -5 is out of range: expected 1 or more rows"),
        ("postgres", "lock_timeout", "-1", "[postgres] lock_timeout -1.0 is out of range: expected 0 or more seconds"),
        ("postgres", "load_streams", "0", "[postgres] load_streams 0 is out of range: expected 1 to 16"),
        ("progress", "interval", "-5", "[progress] interval -5.0 is out of range: expected 0 or more seconds"),
        # Values luigi itself cannot read: its error names neither the key nor what is expected.
        ("tlc", "source", "Parquet", "[tlc] source 'Parquet': expected one of auto, csv, parquet"),
        ("tlc", "unknown_columns", "keep", "[tlc] unknown_columns 'keep': expected one of error, drop"),
        ("tlc", "retries", "four", "[tlc] retries 'four': expected a whole number"),
        ("tlc", "timeout", "1m", "[tlc] timeout '1m': expected a number"),
        ("lake", "keep_raw", "no", "[lake] keep_raw 'no': expected true or false"),
    ],
)  # fmt: skip
def test_a_bad_setting_is_one_line_naming_setting_value_and_expectation(section, key, value, message):
    with luigi_settings({(section, key): value}), pytest.raises(DataError) as error:
        getattr(config, section)()
    assert str(error.value) == message


def test_good_settings_pass():
    settings = {
        ("tlc", "csv_url"): "file:///srv/tlc/{service}/{year}/{service}_{year}-{month}.csv?x={{literal}}",
        ("tlc", "retries"): "0",
        ("tlc", "retry_backoff"): "0",
        ("lake", "row_group_rows"): "1",
    }
    with luigi_settings(settings):
        assert config.tlc().url_for("green", "2020", "01") == "file:///srv/tlc/green/2020/green_2020-01.csv?x={literal}"
        assert config.lake().row_group_rows == 1


def test_a_bad_url_template_stops_the_cli_before_any_download(tmp_path, server):
    settings = {
        **pipeline_settings(server, tmp_path / "lake"),
        ("tlc", "csv_url"): server.base_url + CSV.split(":9", 1)[1].replace("{month}", "{mon}"),
    }
    done = luigi_command(
        ["IngestMonth", "--service", "yellow", "--month", "2020-07", "--local-scheduler"],
        write_config(tmp_path / "luigi.cfg", settings),
    )
    assert done.returncode == 35  # [retcode] scheduling_error: luigi could not tell what is done
    shown = settings[("tlc", "csv_url")]
    line = f"due to error in complete() method: [tlc] csv_url '{shown}' has an unknown placeholder {{mon}}: {TEMPLATE}"
    assert any(logged.endswith(line) for logged in done.stderr.splitlines())
    assert "Traceback" not in done.stderr  # the one line, not luigi's traceback of it
    assert "Did not run any tasks" in done.stderr
    assert server.total_requests() == 0
    assert files_under(tmp_path / "lake") == []


@pytest.mark.parametrize(
    ("section", "key", "value", "message"),
    [
        ("tlc", "source", "Parquet", "[tlc] source 'Parquet': expected one of auto, csv, parquet"),
        ("tlc", "timeout", "0", "[tlc] timeout 0.0 is out of range: expected more than 0 seconds"),
        ("lake", "keep_raw", "no", "[lake] keep_raw 'no': expected true or false"),
        ("lake", "row_group_rows", "0", "[lake] row_group_rows 0 is out of range: expected 1 or more rows"),
        ("lake", "root", "{file}", "[lake] root {file}: is a file; expected a directory"),
        ("lake", "root", "{file}/lake", "[lake] root {file}/lake: {file} is a file; expected a directory"),
    ],
)
def test_a_bad_setting_on_the_command_line_is_one_line_and_exit_35(tmp_path, server, section, key, value, message):
    """What a user sees: luigi's "Will not run" line carrying the message, no traceback, [retcode] scheduling_error."""
    (tmp_path / "a-file").write_text("")
    value, message = (text.replace("{file}", str(tmp_path / "a-file")) for text in (value, message))
    settings = {**pipeline_settings(server, tmp_path / "lake"), (section, key): value}
    done = luigi_command(
        ["IngestMonth", "--service", "yellow", "--month", "2020-07", "--local-scheduler"],
        write_config(tmp_path / "luigi.cfg", settings),
    )
    assert done.returncode == 35, done.stderr
    assert any(line.endswith(f"due to error in complete() method: {message}") for line in done.stderr.splitlines())
    assert "Traceback" not in done.stderr
    assert server.total_requests() == 0


def test_a_lake_root_that_cannot_be_written_is_one_line_before_any_work():
    """sysfs takes no new files, for any user: as a read-only directory does for a user who is not root."""
    with pytest.raises(DataError) as error:
        Lake("/sys/luigi_tasks_lake").check()
    message = str(error.value)
    assert message.startswith("[lake] root /sys/luigi_tasks_lake: cannot write in /sys: ")
    assert message.endswith("; expected a directory this user can write")
    assert not Path("/sys/luigi_tasks_lake").exists()


@pytest.mark.parametrize(
    ("section", "key", "value"),
    [
        ("postgres", "dsn", "postgresql://luigi:p%40ss-secret@127.0.0.1:1/db"),  # a percent-encoded password
        ("tlc", "csv_url", CSV + "?X-Amz-Signature=ab%2Fsig-secret"),  # a presigned URL
    ],
)
def test_a_percent_sign_in_a_value_is_refused_in_one_line_without_the_value(tmp_path, server, section, key, value):
    settings = {**pipeline_settings(server, tmp_path / "lake"), (section, key): value}
    done = luigi_command(
        ["IngestMonth", "--service", "yellow", "--month", "2020-07", "--sinks", "lake,postgres", "--local-scheduler"],
        write_config(tmp_path / "luigi.cfg", settings),
    )
    assert done.returncode == 35  # luigi could not tell whether a task that reads the key is done
    message = (
        f"[{section}] {key} cannot be read from the config file: write a literal % as %% (luigi reads %(name)s and"
        " ${VAR} in values) and set the variables it names; the value is not shown"
    )
    assert any(line.endswith(f": {message}") for line in done.stderr.splitlines())
    assert "secret" not in done.stdout + done.stderr


def test_a_percent_sign_written_twice_is_one_in_the_value(tmp_path, server):
    signed = month_path(CSV_PATH, "yellow", "2020-07") + "?X-Amz-Signature=ab%2Fsig"
    server.add(signed, gzip.compress((DATA / "yellow_tripdata_2020-07_head266.csv").read_bytes()))
    serve_zones(server)
    settings = {
        **pipeline_settings(server, tmp_path / "lake"),
        ("tlc", "csv_url"): server.base_url + CSV_PATH + "?X-Amz-Signature=ab%%2Fsig",
    }
    done = luigi_command(
        ["IngestMonth", "--service", "yellow", "--month", "2020-07", "--local-scheduler"],
        write_config(tmp_path / "luigi.cfg", settings),
    )
    assert done.returncode == 0, done.stderr
    assert server.requests[signed] == 1
