"""Streaming conversion of a raw TLC file (CSV, csv.gz or Parquet) into the canonical Parquet.

Memory is bounded by one row group plus the reader's blocks, whatever the size of the month.
Every file of a dataset comes out with the catalogue's schema; a manifest with the source's
checksum and the row counts goes into the Parquet footer's key-value metadata, so the data and
its manifest are one file, written in one rename.
"""

from __future__ import annotations

import collections
import contextlib
import csv
import dataclasses
import datetime as dt
import decimal
import errno
import gzip
import io
import json
import os
import re
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
from isal import igzip, isal_zlib

from luigi_tasks.catalog import (
    AMOUNT,
    CODE,
    TEXT,
    TIME,
    TLC_TIME_ZONE,
    ColumnPlan,
    Dataset,
    next_month,
    packed_scalar,
    plan_columns,
)
from luigi_tasks.derive import NullCounts, derived, has_spellings, mapped, needs_map
from luigi_tasks.download import GZIP_TWICE, SourceVersion, is_gzip, payload_kind, redact_url
from luigi_tasks.errors import DataError, PipelineError
from luigi_tasks.files import atomic_path, sha256_of
from luigi_tasks.parquet_stream import open_parquet
from luigi_tasks.quality import Quality, QualityCounter

MANIFEST_KEY = b"luigi_tasks.manifest"
# Small blocks keep the reader's memory low; batches are regrouped into full row groups anyway.
# Arrow's streaming reader reads and parses ahead on its own threads while this thread encodes.
CSV_BLOCK_BYTES = 1 << 20
# The parallel CSV path parses the file in pieces of this size, cut at line ends: the blocks of a piece are
# parsed on all cores, up to PARSED_PIECES_AHEAD pieces ahead of the encoding, which bounds the memory.
CSV_PIECE_BYTES = 4 << 20
PARSED_PIECES_AHEAD = 4  # a default row group (131,072 rows) is about 3.5 pieces
_RAGGED = re.compile(r"Expected (\d+) columns, got (\d+)")
# How Arrow's CSV reader reports a value it cannot convert (its column number counts the file's columns from 0).
_BAD_CSV_VALUE = re.compile(r"In CSV column #(\d+): CSV conversion error to (.+?): invalid value '(.*)'$", re.DOTALL)
_SHOWN_CHARS = 40  # a bad value is quoted up to this many characters
# Below 2^32 a float64 keeps every integer and about six decimals of fraction, so "1.5" cannot pass as whole.
_FLOAT64_SAFE_BELOW = 2**32
_WHOLE_DECIMAL = pa.decimal128(38, 10)  # 28 integer digits hold any int64

RowProgress = Callable[[int, "int | None"], None]


def _use_jemalloc() -> None:
    """Make jemalloc Arrow's allocator in this process, unless ARROW_DEFAULT_MEMORY_POOL chooses one.

    Measured on a yellow month (bench/convert_bench.py, docs/benchmarks.md): against Arrow's default (mimalloc) the
    conversion is about 10% faster and peaks about 40 MB lower. A build of pyarrow without jemalloc keeps its default.
    """
    if os.environ.get("ARROW_DEFAULT_MEMORY_POOL"):
        return
    with contextlib.suppress(NotImplementedError):
        pa.set_memory_pool(pa.jemalloc_memory_pool())


_use_jemalloc()


@dataclasses.dataclass(frozen=True)
class Manifest:
    """What a canonical file was made from and what is in it."""

    dataset: str
    month: str | None
    source_url: str
    source_bytes: int
    source_sha256: str
    rows_in: int
    rows_out: int
    rows_outside_month: int
    rows_without_pickup: int
    min_pickup: str | None
    max_pickup: str | None
    columns_filled_null: tuple[str, ...]
    columns_dropped: tuple[str, ...]
    quality: Quality | None = None  # absent from manifests written before quality was checked
    # Integer codes that the source wrote as NaN (a float's "unknown"), kept as NULL: column -> values.
    nan_codes_as_null: dict[str, int] = dataclasses.field(default_factory=dict)
    # Text in a code column that no spelling of the catalogue maps (2009's vendor "DDS"): column -> value -> rows.
    values_without_code: dict[str, dict[str, int]] = dataclasses.field(default_factory=dict)
    # Zone ids computed from coordinates (2009-2010) that are NULL: column -> "no coordinates" / "in no zone" -> rows.
    zones_not_found: dict[str, dict[str, int]] = dataclasses.field(default_factory=dict)
    # Columns the catalogue does not know, kept after the canonical ones: name -> Arrow type.
    columns_added: dict[str, str] = dataclasses.field(default_factory=dict)
    # The source's ETag, Last-Modified and size when it was downloaded (absent from manifests written before they
    # were recorded): what a refresh compares with the source's answer now.
    source_version: SourceVersion | None = None

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    def notes(self) -> list[str]:
        """What became NULL for want of a value the catalogue understands, one line each (new columns apart)."""
        lines = []
        if self.nan_codes_as_null:
            counted = ", ".join(f"{name} {n:,}" for name, n in self.nan_codes_as_null.items())
            lines.append(f"NaN codes kept as NULL: {counted}")
        for name, values in self.values_without_code.items():
            counted = ", ".join(f"{value!r} {n:,}" for value, n in values.items())
            lines.append(f"{name}: values without a code, kept as NULL: {counted}")
        for name, counts in self.zones_not_found.items():
            if any(counts.values()):
                counted = ", ".join(f"{n:,} {why}" for why, n in counts.items() if n)
                lines.append(f"{name} from coordinates: NULL for {counted}")
        return lines

    def new_columns_text(self) -> str:
        """'request_source (string), ...': the columns this month brought that the catalogue does not know."""
        return ", ".join(f"{name} ({type_})" for name, type_ in self.columns_added.items())

    @classmethod
    def from_json(cls, text: str | bytes) -> Manifest:
        fields = json.loads(text)
        for key in ("columns_filled_null", "columns_dropped"):
            fields[key] = tuple(fields[key])
        if fields.get("quality") is not None:
            fields["quality"] = Quality.from_dict(fields["quality"])
        if fields.get("source_version") is not None:
            fields["source_version"] = SourceVersion(**fields["source_version"])
        return cls(**fields)


def read_manifest(path: Path) -> Manifest:
    metadata = pq.read_metadata(path).metadata or {}
    if MANIFEST_KEY not in metadata:
        raise DataError(f"{path} has no luigi_tasks manifest: it was not written by ToParquet")
    return Manifest.from_json(metadata[MANIFEST_KEY])


def _label(dataset: Dataset, month: dt.date | None) -> str:
    return f"{dataset.name} {month:%Y-%m}" if month else f"{dataset.name}"


def to_canonical_parquet(
    raw: Path,
    dest: Path,
    *,
    dataset: Dataset,
    month: dt.date | None,
    source_url: str,
    source_version: SourceVersion | None = None,
    row_group_rows: int = 131_072,
    new_columns: str = "refuse",
    progress: RowProgress | None = None,
    quality: QualityCounter | None = None,
) -> Manifest:
    """Convert `raw` into `dest` with the dataset's canonical schema; returns the manifest.

    `source_url` and `source_version` (the validators the download recorded) say where `raw` came from.

    `dest` appears only when complete. Rows whose pickup lies outside `month` are kept and counted.
    `quality` counts the rows failing each check; a check over its fail level is a DataError (nothing is written).
    """
    where = f"{_label(dataset, month)} ({raw})"
    kind = payload_kind(raw.name)
    if kind == "parquet":
        source = _ParquetSource(raw, dataset, where=where, new_columns=new_columns)
    else:
        source = _CsvSource(raw, dataset, kind=kind, where=where, new_columns=new_columns)
    stats = _PickupStats(dataset.pickup_column, month)
    quality = quality or QualityCounter(dataset)
    rows_out = 0
    nulled = NullCounts()
    canonical_batches = _canonical_batches(source, dataset, where, nulled)
    with _disk_full_named(where, dest), ThreadPoolExecutor(max_workers=1) as hasher, atomic_path(dest) as part:
        # The checksum runs beside the conversion: hashlib releases the GIL.
        source_sha256 = hasher.submit(sha256_of, raw)
        with pq.ParquetWriter(
            part, source.schema, compression="zstd", use_dictionary=_dictionary_columns(source.schema)
        ) as writer:
            for table in _row_groups(canonical_batches, row_group_rows):
                stats.add(table)
                quality.add(table)
                writer.write_table(table, row_group_size=row_group_rows)
                rows_out += table.num_rows
                if progress:
                    progress(rows_out, source.total_rows)
            if rows_out == 0:
                raise DataError(f"{where}: {source.no_rows}")
            manifest = Manifest(
                dataset=dataset.name,
                month=f"{month:%Y-%m}" if month else None,
                source_url=redact_url(source_url),
                source_version=source_version,
                source_bytes=raw.stat().st_size,
                source_sha256=source_sha256.result(),
                rows_in=source.rows_read,
                rows_out=rows_out,
                columns_filled_null=tuple(c.name for c in source.plan.missing),
                columns_dropped=tuple(source.plan.dropped) + source.dropped_empty,
                columns_added={field.name: str(field.type) for field in source.added},
                nan_codes_as_null=dict(sorted(nulled.nan_codes.items())),
                values_without_code={name: dict(found.most_common()) for name, found in nulled.without_code.items()},
                zones_not_found={name: dict(sorted(found.items())) for name, found in nulled.zones.items()},
                quality=quality.result(_label(dataset, month), rows_out, stats.without, stats.outside),
                **stats.summary(),
            )
            writer.add_key_value_metadata({MANIFEST_KEY: manifest.to_json()})
        written = pq.read_metadata(part).num_rows
        if written != manifest.rows_in:
            raise DataError(f"{where}: read {manifest.rows_in:,} rows but the Parquet holds {written:,}")
    return manifest


_DISK_FULL = (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)


@contextlib.contextmanager
def _disk_full_named(where: str, dest: Path) -> Iterator[None]:
    """A full disk (or quota, or file-size limit) as one line naming the file that could not be written."""
    try:
        yield
    except OSError as exc:
        if exc.errno in _DISK_FULL:
            raise PipelineError(f"{where}: cannot write {dest}: {os.strerror(exc.errno)}") from None
        raise


def _dictionary_columns(schema: pa.Schema) -> list[str]:
    # Timestamps are nearly unique: a dictionary for them is built, overflows and is thrown away.
    return [field.name for field in schema if field.type != TIME]


def _added_field(name: str, source_type: pa.DataType) -> pa.Field | None:
    """A column the catalogue does not know, with a normalised type (integers int64, floats float64, times
    timestamp[us], the rest text); None for a column of nulls only (a null type says nothing of the column)."""
    if pa.types.is_null(source_type):
        return None
    if pa.types.is_integer(source_type):
        return pa.field(name, CODE)
    if pa.types.is_floating(source_type) or pa.types.is_decimal(source_type):
        return pa.field(name, AMOUNT)
    if pa.types.is_timestamp(source_type) or pa.types.is_date(source_type):
        return pa.field(name, TIME)
    return pa.field(name, TEXT)


def _added_values(values: pa.Array, type_: pa.DataType) -> pa.Array:
    if pa.types.is_boolean(values.type):
        values = pc.cast(values, pa.string())
    return _cast(values, type_)


def _row_groups(batches: Iterator[pa.RecordBatch], rows: int) -> Iterator[pa.Table]:
    """Regroup reader batches into tables of exactly `rows` rows (the last one shorter)."""
    pending: list[pa.RecordBatch] = []
    pending_rows = 0
    for batch in batches:
        pending.append(batch)
        pending_rows += batch.num_rows
        while pending_rows >= rows:
            table = pa.Table.from_batches(pending)
            yield table.slice(0, rows)
            rest = table.slice(rows)
            pending, pending_rows = rest.to_batches(), rest.num_rows
    if pending_rows:
        yield pa.Table.from_batches(pending)


class _BadValue(DataError):
    """A value that does not fit its canonical type; the source can say where it is (a CSV, on which line)."""

    def __init__(self, message: str, *, column: str, value: str | None, type_name: str) -> None:
        super().__init__(message)
        self.column, self.value, self.type_name = column, value, type_name


class _NotWhole(pa.ArrowInvalid):
    """A code that is not a whole number within int64, with the value."""

    def __init__(self, value: str) -> None:
        super().__init__(f"{value!r} is not a whole number within int64")
        self.value = value


def _canonical_batches(
    source: _CsvSource | _ParquetSource, dataset: Dataset, where: str, nulled: NullCounts
) -> Iterator[pa.RecordBatch]:
    """The source's batches in the canonical schema; a value that does not fit is named where it is. NaN codes
    and values without a code become NULL, counted in `nulled`."""
    try:
        for batch in source.batches():
            yield _canonical(batch, dataset, source.plan, source.added, where=where, nulled=nulled)
    except _BadValue as bad:
        raise source.locate(bad) from None


def _canonical(
    batch: pa.RecordBatch,
    dataset: Dataset,
    plan: ColumnPlan,
    added: tuple[pa.Field, ...],
    *,
    where: str,
    nulled: NullCounts,
) -> pa.RecordBatch:
    """Cast to the catalogue's types, map older spellings, derive what the file lacks (zone ids from coordinates),
    fill absent columns with NULL, put columns in canonical order."""
    spelled = {column.name: source_name for source_name, column in plan.read}
    arrays: dict[str, pa.Array] = {}
    for column in dataset.columns:
        if column.name not in spelled:
            arrays[column.name] = pa.nulls(batch.num_rows, column.type)
            continue
        values = batch.column(column.name)
        try:
            if needs_map(column, values.type):
                arrays[column.name] = mapped(values, column, nulled)
                continue
            arrays[column.name] = _cast(values, column.type)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            if has_spellings(column, values):  # an older era's text codes ("CSH" for cash)
                arrays[column.name] = mapped(values, column, nulled)
                continue
            raise _BadValue(
                f"{where}: column {spelled[column.name]!r} cannot be read as {column.type}: {exc}",
                column=spelled[column.name],
                value=getattr(exc, "value", None),
                type_name=str(column.type),
            ) from None
        if column.type == CODE and arrays[column.name].null_count > values.null_count:
            nulled.nan_codes[column.name] += arrays[column.name].null_count - values.null_count  # only NaN is nulled
    for column in plan.derived:
        arrays[column.name] = derived(column, arrays, nulled)
    canonical = [arrays[column.name] for column in dataset.columns]
    for field in added:
        try:
            canonical.append(_added_values(batch.column(field.name), field.type))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            raise _BadValue(
                f"{where}: new column {field.name!r} cannot be read as {field.type}: {exc}",
                column=field.name,
                value=getattr(exc, "value", None),
                type_name=str(field.type),
            ) from None
    return pa.RecordBatch.from_arrays(canonical, schema=_schema(dataset, added))


def _schema(dataset: Dataset, added: tuple[pa.Field, ...]) -> pa.Schema:
    """The lake file's schema: the catalogue's columns, then the new ones this month brought."""
    return pa.schema([*dataset.schema, *added])


def _cast(values: pa.Array, canonical: pa.DataType) -> pa.Array:
    """One source column as its canonical type; ArrowInvalid when a value does not fit it."""
    if canonical == TIME:
        values = _wall_clock(values)
    elif canonical == CODE and (pa.types.is_string(values.type) or pa.types.is_large_string(values.type)):
        return _integer_codes(values)
    elif canonical == CODE and pa.types.is_floating(values.type):
        values = _nan_as_null(values)
    elif canonical == AMOUNT and pa.types.is_decimal(values.type):
        # Through the decimal text: Arrow's direct cast gives 14.200000000000001 for 14.20.
        return pc.cast(pc.cast(values, pa.string()), AMOUNT)
    return values if values.type == canonical else pc.cast(values, canonical, safe=True)


def _integer_codes(text: pa.Array) -> pa.Array:
    """int64 codes from text, exactly: '9007199254740993' stays itself, '1.0' is 1, '1.5' is an ArrowInvalid."""
    try:
        return _parsed_codes(text)
    except pa.ArrowInvalid as exc:
        bad = _first_non_integer(text)
        raise (_NotWhole(bad) if bad else exc) from None


def _nan_as_null(floats: pa.Array) -> pa.Array:
    """NaN, a float column's "unknown", as NULL."""
    nan = pc.is_nan(floats)
    return pc.if_else(nan, pa.nulls(1, floats.type)[0], floats) if pc.any(nan).as_py() else floats


def _parsed_codes(text: pa.Array) -> pa.Array:
    # Some files write codes as floats ("1.0", pandas' way with blanks), so parse as float64 first: it is
    # fast, and exact for codes of usual size. (A failing cast is slow in Arrow: never the usual path.)
    try:
        floats = pc.cast(text, pa.float64())
    except pa.ArrowInvalid:
        text = pc.utf8_trim_whitespace(text)  # " 3 ": the CSV reader's own number parsing allowed it
        floats = pc.cast(text, pa.float64())
    floats = _nan_as_null(floats)
    if (pc.max(pc.abs(floats)).as_py() or 0) < _FLOAT64_SAFE_BELOW:
        return pc.cast(floats, CODE)
    # Larger values (2^53 + 1 has no float64) come from the text itself: integers, else decimals, which refuse 1.5.
    try:
        return pc.cast(text, CODE)
    except pa.ArrowInvalid:
        return pc.cast(pc.cast(text, _WHOLE_DECIMAL), CODE)


def _first_non_integer(text: pa.Array) -> str | None:
    """The first value that is not a whole number within int64 (the error path only, so plain Python)."""
    for value in text.drop_null().to_pylist():
        with contextlib.suppress(decimal.InvalidOperation):
            number = decimal.Decimal(value)
            if number == number.to_integral_value() and -(2**63) <= number < 2**63:
                continue
        return value
    return None


def _wall_clock(values: pa.Array) -> pa.Array:
    """Zone-aware times as New York wall-clock times without a zone (05:00 UTC -> 00:00 in January)."""
    if not pa.types.is_timestamp(values.type) or values.type.tz is None:
        return values
    # Changing the zone of the type keeps the instants; local_timestamp then gives that zone's wall clock.
    return pc.local_timestamp(values.cast(pa.timestamp(values.type.unit, tz=TLC_TIME_ZONE)))


def _time_scalar(moment: dt.datetime) -> pa.Scalar:
    """`moment` as a TIME scalar, made from its microseconds (see packed_scalar)."""
    return packed_scalar(TIME, "<q", (moment - dt.datetime(1970, 1, 1)) // dt.timedelta(microseconds=1))


class _PickupStats:
    """Counts rows outside the file's month and tracks the pickup range, batch by batch."""

    def __init__(self, column: str | None, month: dt.date | None) -> None:
        self.column = column
        self.outside = 0
        self.without = 0
        self.low: dt.datetime | None = None
        self.high: dt.datetime | None = None
        if month is not None:
            following = next_month(month)
            self.start = _time_scalar(dt.datetime(month.year, month.month, 1))
            self.end = _time_scalar(dt.datetime(following.year, following.month, 1))

    def add(self, table: pa.Table) -> None:
        if self.column is None:
            return
        times = table.column(self.column)
        self.without += times.null_count
        outside = pc.or_(pc.less(times, self.start), pc.greater_equal(times, self.end))
        self.outside += pc.sum(outside).as_py() or 0
        bounds = pc.min_max(times).as_py()
        if bounds["min"] is not None:
            self.low = bounds["min"] if self.low is None else min(self.low, bounds["min"])
            self.high = bounds["max"] if self.high is None else max(self.high, bounds["max"])

    def summary(self) -> dict:
        return {
            "rows_outside_month": self.outside,
            "rows_without_pickup": self.without,
            "min_pickup": self.low.isoformat(sep=" ") if self.low else None,
            "max_pickup": self.high.isoformat(sep=" ") if self.high else None,
        }


def _open_text(raw: Path, kind: str) -> io.TextIOBase:
    if kind == "csv.gz":
        return gzip.open(raw, "rt", encoding="utf-8-sig", errors="replace", newline="")
    return open(raw, encoding="utf-8-sig", errors="replace", newline="")


def _unreadable(where: str, exc: BaseException) -> DataError:
    if "runcated" in str(exc) or isinstance(exc, EOFError):
        return DataError(f"{where}: the gzip data ends before its end-of-stream marker (a truncated download?)")
    return DataError(f"{where}: cannot read the file: {exc}")


class _NotForTheParallelPath(Exception):
    """The parallel CSV path cannot give the exact values of this file: the exact reader must read it."""


def _whole_floats(floats: pa.ChunkedArray) -> pa.ChunkedArray:
    """Integer codes read as float64, as int64 where that is exact (see _parsed_codes); else _NotForTheParallelPath."""
    bounds = pc.min_max(floats).as_py()
    if any(abs(bound) >= _FLOAT64_SAFE_BELOW for bound in bounds.values() if bound is not None):
        raise _NotForTheParallelPath("a code too large for float64 to be exact")
    return pc.cast(floats, CODE, safe=True)  # 1.5 or NaN: ArrowInvalid


def _line_pieces(raw: Path, kind: str) -> Iterator[memoryview]:
    """The file's text (decompressed) in pieces of about CSV_PIECE_BYTES, each ending at a line end."""
    # ISA-L's inflate takes 40% of zlib's CPU (Arrow's and Python's gzip use zlib); a truncated stream is an
    # EOFError.
    with igzip.open(raw, "rb") if kind == "csv.gz" else open(raw, "rb") as source:
        rest = b""
        while block := source.read(CSV_PIECE_BYTES):
            text = rest + block
            cut = (text.rfind(b"\n") + 1) or (text.rfind(b"\r") + 1)  # CR-only line ends too
            if not cut:
                raise _NotForTheParallelPath("no line end in a whole piece")
            yield memoryview(text)[:cut]
            rest = text[cut:]
        if rest:
            yield memoryview(rest)


_END = object()


def _read_ahead(items: Iterator, depth: int) -> Iterator:
    """Yield `items`, making up to `depth` next ones on a thread of its own meanwhile (reading and Arrow release
    the GIL)."""
    worker = ThreadPoolExecutor(max_workers=1)
    try:
        # One thread: the calls run one after the other, in order.
        upcoming = collections.deque(worker.submit(next, items, _END) for _ in range(depth))
        while (item := upcoming.popleft().result()) is not _END:
            upcoming.append(worker.submit(next, items, _END))
            yield item
    finally:
        worker.shutdown(cancel_futures=True)


class _CsvSource:
    def __init__(self, raw: Path, dataset: Dataset, *, kind: str, where: str, new_columns: str) -> None:
        self.raw = raw
        self.where = where
        try:
            if kind == "csv":
                with open(raw, "rb") as head:
                    kind = "csv.gz" if is_gzip(head.read(2)) else kind  # some files named .csv are gzip data
            self.kind = kind
            if kind == "csv.gz":
                with gzip.open(raw, "rb") as inner:
                    twice = is_gzip(inner.read(2))
            with _open_text(raw, kind) as text:
                self.header = next(csv.reader(text), None)
        except (OSError, EOFError) as exc:
            raise _unreadable(where, exc) from None
        if kind == "csv.gz" and twice:
            raise DataError(f"{where}: the file {GZIP_TWICE}")
        if not self.header:
            raise DataError(f"{where}: the file is empty")
        self.plan = plan_columns(dataset, self.header, where=where, new_columns=new_columns)
        # A CSV says nothing of a new column's type: it is kept as text.
        self.added = tuple(pa.field(name, TEXT) for name in self.plan.added)
        self.dropped_empty: tuple[str, ...] = ()
        self.schema = _schema(dataset, self.added)
        self.rows_read = 0
        self.total_rows = None
        self.no_rows = "the file has a header but no rows"

    def batches(self) -> Iterator[pa.RecordBatch]:
        """The rows in batches, parsed in parallel; the exact reader takes over where that path is not sure."""
        done = 0
        try:
            for batch in self._parallel_batches():
                done += batch.num_rows
                self.rows_read = done
                yield batch
            return
        except (_NotForTheParallelPath, pa.ArrowException, OSError, EOFError, isal_zlib.error):
            # Unusual values, bad input, a broken file: the exact reader reads it (again) from the start and
            # says what is wrong; rows already passed on are skipped, and were read the same way by both.
            pass
        self.rows_read = 0
        for batch in self._exact_batches():
            if done >= batch.num_rows:
                done -= batch.num_rows
                continue
            yield batch.slice(done)
            done = 0

    def _reader_options(self, *, codes: pa.DataType, skip_rows: int) -> dict:
        read_names = {source_name: column.name for source_name, column in self.plan.read}
        read_names.update((name, name) for name in self.plan.added)
        # Unread columns get placeholder names so that a blank or repeated name cannot clash.
        names = [read_names.get(name, f"__unread_{i}") for i, name in enumerate(self.header)]
        types = {column.name: codes if column.type == CODE else column.type for _, column in self.plan.read}
        types.update((name, TEXT) for name in self.plan.added)
        return dict(
            read_options=pa_csv.ReadOptions(column_names=names, skip_rows=skip_rows, block_size=CSV_BLOCK_BYTES),
            convert_options=pa_csv.ConvertOptions(
                column_types=types,
                include_columns=list(read_names.values()),
                null_values=[""],
                strings_can_be_null=True,
                quoted_strings_can_be_null=True,
            ),
        )

    def _parallel_batches(self) -> Iterator[pa.RecordBatch]:
        # Integer codes are read as float64 (some files write them as "1.0") and kept where that is exact;
        # anything else (_NotForTheParallelPath, or an error) sends the file to the exact reader.
        codes = [column.name for _, column in self.plan.read if column.type == CODE]
        first = self._reader_options(codes=pa.float64(), skip_rows=1)
        rest = self._reader_options(codes=pa.float64(), skip_rows=0)

        def parse(piece: tuple[int, memoryview]) -> pa.Table:
            index, text = piece
            table = pa_csv.read_csv(pa.py_buffer(text), **(rest if index else first))
            for name in codes:
                table = table.set_column(table.schema.get_field_index(name), name, _whole_floats(table[name]))
            return table

        pieces = _read_ahead(enumerate(_line_pieces(self.raw, self.kind)), depth=1)
        # Parsing runs a row group ahead, so that it goes on while a row group is encoded.
        for table in _read_ahead(map(parse, pieces), depth=PARSED_PIECES_AHEAD):
            yield from table.to_batches()

    def _exact_batches(self) -> Iterator[pa.RecordBatch]:
        # Integer codes are read as text, then cast exactly (_integer_codes): some files write them as "1.0".
        reader_options = self._reader_options(codes=pa.string(), skip_rows=1)
        try:
            source = self.raw
            if self.kind != payload_kind(self.raw.name):  # gzip data under a .csv name: Arrow goes by the name
                source = pa.input_stream(str(self.raw), compression="gzip")
            reader = pa_csv.open_csv(source, **reader_options)
            for batch in reader:
                self.rows_read += batch.num_rows
                yield batch
        except pa.ArrowInvalid as exc:
            raise self._explain(exc) from None
        except (OSError, EOFError) as exc:
            raise _unreadable(self.where, exc) from None

    def _explain(self, exc: Exception) -> DataError:
        message = str(exc)
        if _RAGGED.search(message):
            return DataError(f"{self.where}: {self._ragged_line()}")
        bad = _BAD_CSV_VALUE.search(message)
        if bad and int(bad[1]) < len(self.header):
            return self._bad_value(self.header[int(bad[1])], bad[3], bad[2])
        return DataError(f"{self.where}: {message}")

    def locate(self, bad: _BadValue) -> DataError:
        """A value the canonical cast refused, named with its line."""
        if bad.value is None or bad.column not in self.header:
            return bad
        return self._bad_value(bad.column, bad.value, bad.type_name)

    def _bad_value(self, column: str, value: str, type_name: str) -> DataError:
        line = self._line_of(self.header.index(column), value)
        at = f"line {line:,}: " if line else ""
        return DataError(f"{self.where}: {at}column {column}: {_shown(value)} is not {_expected(type_name)}")

    def _line_of(self, index: int, value: str) -> int | None:
        """The line (1-based, as an editor counts) of the first row with `value` in that column (error path only)."""
        with _open_text(self.raw, self.kind) as text:
            rows = csv.reader(text)
            next(rows, None)
            try:
                for row in rows:
                    if len(row) > index and row[index] == value:
                        return rows.line_num
            except csv.Error:  # a field beyond the csv module's limit: the message goes without its line
                return None
        return None

    def _ragged_line(self) -> str:
        """Find the first row whose field count differs from the header's (only on the error path)."""
        expected = len(self.header)
        with _open_text(self.raw, self.kind) as text:
            rows = csv.reader(text)
            next(rows, None)
            for row in rows:
                if len(row) != expected and row:
                    line = rows.line_num
                    is_last = next(rows, None) is None
                    cut = "; the file ends mid-row (cut last line?)" if is_last and len(row) < expected else ""
                    return f"line {line} has {len(row)} fields, the header has {expected}{cut}"
        return "a row has a different number of fields than the header"


def _shown(value: str) -> str:
    if len(value) <= _SHOWN_CHARS:
        return repr(value)
    return f"{value[:_SHOWN_CHARS] + '...'!r} ({len(value):,} characters)"


def _expected(type_name: str) -> str:
    if type_name.startswith("timestamp"):
        return "a date and time"
    return {"int64": "an integer (int64)", "double": "a number"}.get(type_name, f"a {type_name} value")


class _ParquetSource:
    def __init__(self, raw: Path, dataset: Dataset, *, where: str, new_columns: str) -> None:
        self.where = where
        try:
            self.file = open_parquet(str(raw))
        except Exception as exc:  # pyarrow raises several types for a bad footer
            raise DataError(f"{where}: not a readable Parquet file ({exc})") from None
        self.plan = plan_columns(dataset, self.file.schema_arrow.names, where=where, new_columns=new_columns)
        types = dict(zip(self.file.schema_arrow.names, self.file.schema_arrow.types, strict=True))
        fields = {name: _added_field(name, types[name]) for name in self.plan.added}
        self.added = tuple(field for field in fields.values() if field is not None)
        self.dropped_empty = tuple(name for name, field in fields.items() if field is None)  # nulls only
        self.schema = _schema(dataset, self.added)
        self.total_rows = self.file.metadata.num_rows
        self.rows_read = 0
        self.no_rows = "the Parquet file has no rows"

    def batches(self) -> Iterator[pa.RecordBatch]:
        source_names = [source_name for source_name, _ in self.plan.read] + [field.name for field in self.added]
        canonical_names = [column.name for _, column in self.plan.read] + [field.name for field in self.added]
        for batch in self.file.iter_batches(columns=source_names, batch_size=65_536):
            self.rows_read += batch.num_rows
            yield pa.RecordBatch.from_arrays(batch.columns, names=canonical_names)

    def locate(self, bad: _BadValue) -> DataError:
        """A Parquet file has no lines: the column and the reader's words say enough."""
        return bad
