"""NYC TLC trip records into a data lake (local, GCS, S3 or Azure) and, through sinks, a warehouse, as Luigi tasks.

`luigi --module luigi_tasks <Task>` finds every public task here.
"""

from luigi_tasks.tasks.azure import UploadToAzure, UploadZonesToAzure
from luigi_tasks.tasks.backfill import Backfill
from luigi_tasks.tasks.bigquery import BigQueryExternalTable, LoadToBigQuery, LoadZonesToBigQuery
from luigi_tasks.tasks.duckdb import LoadToDuckDB, LoadZonesToDuckDB
from luigi_tasks.tasks.gcs import UploadToGCS, UploadZonesToGCS
from luigi_tasks.tasks.ingest import IngestMonth
from luigi_tasks.tasks.lake import DownloadTripData, DownloadZones, ToParquet, ZonesToParquet
from luigi_tasks.tasks.postgres import LoadToPostgres, LoadZonesToPostgres
from luigi_tasks.tasks.s3 import TransferS3ToGCS, UploadToS3, UploadZonesToS3

__all__ = [
    "Backfill",
    "BigQueryExternalTable",
    "LoadToBigQuery",
    "LoadZonesToBigQuery",
    "UploadToAzure",
    "UploadToGCS",
    "UploadToS3",
    "UploadZonesToAzure",
    "UploadZonesToGCS",
    "UploadZonesToS3",
    "DownloadTripData",
    "DownloadZones",
    "IngestMonth",
    "LoadToDuckDB",
    "LoadToPostgres",
    "LoadZonesToDuckDB",
    "LoadZonesToPostgres",
    "ToParquet",
    "TransferS3ToGCS",
    "ZonesToParquet",
]

from luigi_tasks import cli  # noqa: E402 - after the tasks: luigi is parsing its command line now

cli.on_import()
