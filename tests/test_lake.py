"""The lake's own rules on a local disk: which part files are a dead writer's, and what a key is."""

from __future__ import annotations

import os
import time

from luigi_tasks.catalog import ZONES, service
from luigi_tasks.files import atomic_path, remove_stale_parts, writer_tag
from luigi_tasks.lake import canonical_key, entry_key, raw_key
from tests.conftest import month


def test_part_files_of_dead_or_silent_writers_go_and_a_live_writers_stays(tmp_path):
    final = tmp_path / "yellow_tripdata_2021-01.parquet"
    host = writer_tag().split("-")[0]
    live = tmp_path / f".{final.name}.part-{host}-{os.getpid()}-aaaa"  # this process: alive, writing
    dead = tmp_path / f".{final.name}.part-{host}-999999999-bbbb"  # no such pid on this host
    reused = tmp_path / f".{final.name}.part-{host}-1-cccc"  # pid 1 lives, but nobody wrote this for two hours
    elsewhere = tmp_path / f".{final.name}.part-otherhost-{os.getpid()}-dddd"  # another host's pid means nothing
    for part in (live, dead, reused, elsewhere):
        part.write_bytes(b"partial")
    two_hours_ago = time.time() - 7200
    os.utime(reused, (two_hours_ago, two_hours_ago))
    os.utime(elsewhere, (two_hours_ago, two_hours_ago))

    assert sorted(p.name for p in remove_stale_parts(final)) == sorted(p.name for p in (dead, reused, elsewhere))
    assert [p.name for p in tmp_path.iterdir()] == [live.name]


def test_a_failed_writer_leaves_nothing(tmp_path):
    final = tmp_path / "f.parquet"
    try:
        with atomic_path(final) as part:
            part.write_bytes(b"half")
            raise OSError("disk went away")
    except OSError:
        pass
    assert list(tmp_path.iterdir()) == []


def test_keys():
    yellow = service("yellow")
    assert canonical_key(yellow, month("2021-01")) == "yellow/2021/yellow_tripdata_2021-01.parquet"
    assert entry_key(canonical_key(yellow, month("2021-01"))) == "yellow/2021/_yellow_tripdata_2021-01.json"
    assert canonical_key(ZONES, None) == "zones/taxi_zone_lookup.parquet"
    assert raw_key(yellow, month("2021-01"), "csv.gz") == "raw/yellow/yellow_tripdata_2021-01.csv.gz"
