"""NYC TLC trip records into a local lake (and, through sinks, a warehouse) as a Luigi task graph.

`luigi --module luigi_tasks <Task>` finds every public task here.
"""

from luigi_tasks.tasks.backfill import Backfill
from luigi_tasks.tasks.cloud import (
    BigQueryExternalTable,
    LoadToBigQuery,
    LoadZonesToBigQuery,
    TransferS3ToGCS,
    UploadToGCS,
    UploadToS3,
    UploadZonesToGCS,
    UploadZonesToS3,
)
from luigi_tasks.tasks.ingest import IngestMonth
from luigi_tasks.tasks.lake import DownloadTripData, DownloadZones, ToParquet, ZonesToParquet
from luigi_tasks.tasks.postgres import LoadToPostgres, LoadZonesToPostgres

__all__ = [
    "Backfill",
    "BigQueryExternalTable",
    "LoadToBigQuery",
    "LoadZonesToBigQuery",
    "UploadToGCS",
    "UploadToS3",
    "UploadZonesToGCS",
    "UploadZonesToS3",
    "DownloadTripData",
    "DownloadZones",
    "IngestMonth",
    "LoadToPostgres",
    "LoadZonesToPostgres",
    "ToParquet",
    "TransferS3ToGCS",
    "ZonesToParquet",
]

from luigi_tasks import cli  # noqa: E402 - after the tasks: luigi is parsing its command line now

cli.on_import()
