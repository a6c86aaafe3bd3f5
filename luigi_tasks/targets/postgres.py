"""Is a month loaded into PostgreSQL? Its marker row says so, written in the load's own transaction."""

from __future__ import annotations

import luigi

from luigi_tasks.postgres import checked_identifier, done_updates


class PostgresMarkerTarget(luigi.Target):
    """Exists when the marker table has a row for `update_id` (e.g. 'yellow_tripdata:2021-01')."""

    def __init__(self, dsn: str, marker_table: str, update_id: str) -> None:
        self.dsn = dsn
        self.marker_table = checked_identifier(marker_table, "[postgres] marker_table")
        self.update_id = update_id

    def exists(self) -> bool:
        return self.update_id in done_updates(self.dsn, self.marker_table, [self.update_id])
