"""Parquet read batch by batch, in memory that does not grow with the file."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq

# Column pages are read through a buffer of this size rather than a whole column chunk at a time.
READ_BUFFER_BYTES = 1 << 20


def open_parquet(source: str | pa.NativeFile) -> pq.ParquetFile:
    """A ParquetFile to stream with iter_batches.

    pyarrow's default, pre_buffer=True, keeps every column chunk that iter_batches has read until the reader is
    closed, so memory grows with the file: 1.25 GB peak RSS to iterate a 24M-row fhvhv month against 0.21 GB
    without it, and the iteration took twice as long (bench/big_month_bench.py, docs/big-month-benchmark.md).
    """
    # INT96 times (Spark's and Hive's) read as microseconds: as nanoseconds, the TLC's year-3019 drop-off overflows.
    return pq.ParquetFile(source, pre_buffer=False, buffer_size=READ_BUFFER_BYTES, coerce_int96_timestamp_unit="us")
