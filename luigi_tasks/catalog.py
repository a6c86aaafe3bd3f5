"""The TLC datasets as data: services, their canonical columns, header aliases and source files.

Every month of a service is written with exactly the schema declared here, whatever the source
month's header looked like, so that a dataset over all months reads without a cast.
"""

from __future__ import annotations

import datetime as dt
import re
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field

import pyarrow as pa

from luigi_tasks.errors import DataError

# Canonical Arrow types. Integer codes are nullable int64 (blank in some rows of some months);
# timestamps are microseconds, which hold the real year-3019 drop-off that nanoseconds overflow.
CODE = pa.int64()
AMOUNT = pa.float64()
TIME = pa.timestamp("us")
# TLC times are New York wall-clock times; the canonical files keep them so, without a zone.
TLC_TIME_ZONE = "America/New_York"
TEXT = pa.string()


@dataclass(frozen=True)
class Derived:
    """How a column is computed in the months whose files lack it, from canonical columns those files have.

    "code": the column's `values` applied to the text of `inputs[0]` (VendorID from 2009's vendor_name);
    "zone": the taxi zone holding the point (`inputs`: longitude, latitude), from the TLC's zone shapes.
    """

    how: str
    inputs: tuple[str, ...]


@dataclass(frozen=True)
class Column:
    name: str
    type: pa.DataType
    aliases: tuple[str, ...] = ()
    # Columns that exist only in some eras of a service become NULL in the months that lack them.
    optional: bool = False
    # An older era's spellings of the values (lower-cased source text -> canonical value), used where a file holds
    # text in a code column (or numbers in a text one): "CSH" -> 2. Text the map lacks is NULL, counted.
    values: tuple[tuple[str, object], ...] = ()
    derived: Derived | None = None


@dataclass(frozen=True)
class Dataset:
    """One kind of TLC file: a trip service or the zone lookup."""

    name: str
    columns: tuple[Column, ...]
    file_stem: str  # with {service}, {year} and {month} placeholders where the file is per month
    pickup_column: str | None = None
    first_month: dt.date | None = None
    # The months the course's csv.gz backups cover (DataTalksClub/nyc-tlc-data releases); None: no backup.
    course_csv: tuple[dt.date, dt.date] | None = None
    _lookup: dict[str, Column] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        lookup: dict[str, Column] = {}
        for column in self.columns:
            for spelling in (column.name, *column.aliases):
                key = spelling.lower()
                if lookup.setdefault(key, column) is not column:
                    raise ValueError(f"{self.name}: spelling {spelling!r} is claimed twice")
        object.__setattr__(self, "_lookup", lookup)

    @property
    def schema(self) -> pa.Schema:
        return pa.schema([pa.field(c.name, c.type) for c in self.columns])

    def column_for(self, source_name: str) -> Column | None:
        """The canonical column a source header spells, matching aliases and any letter case."""
        return self._lookup.get(source_name.strip().lower())

    def file_name(self, month: dt.date | None, suffix: str) -> str:
        if month is None:
            return self.file_stem + suffix
        return self.file_stem.format(service=self.name, year=f"{month:%Y}", month=f"{month:%m}") + suffix


_PU = Column("PULocationID", CODE, ("PUlocationID",))
_DO = Column("DOLocationID", CODE, ("DOlocationID",))
# Yellow 2009 and 2010 (ERAS.md): coordinates instead of zone ids, text vendors and payment types, other names.
_YELLOW_PU = Column(_PU.name, CODE, _PU.aliases, derived=Derived("zone", ("pickup_longitude", "pickup_latitude")))
_YELLOW_DO = Column(_DO.name, CODE, _DO.aliases, derived=Derived("zone", ("dropoff_longitude", "dropoff_latitude")))
# The data dictionary's vendor codes; DDS (Digital Dispatch Systems, 2009-2010) has none: NULL, its name kept.
VENDOR_CODES = (("cmt", 1), ("vts", 2))
PAYMENT_CODES = (
    *(("credit", 1), ("cre", 1), ("crd", 1)),
    *(("cash", 2), ("cas", 2), ("csh", 2)),
    *(("no charge", 3), ("no", 3), ("noc", 3)),
    *(("dispute", 4), ("dis", 4)),
)
STORE_AND_FORWARD = (("1", "Y"), ("0", "N"))  # 2009's store_and_forward is a number
_CONGESTION = Column("congestion_surcharge", AMOUNT, optional=True)
_AIRPORT = Column("airport_fee", AMOUNT, ("Airport_fee",), optional=True)
_CBD = Column("cbd_congestion_fee", AMOUNT, optional=True)
_TRIP_STEM = "{service}_tripdata_{year}-{month}"
_COURSE_CSV_LAST = dt.date(2021, 7, 1)  # the backups stop at 2021-07; the TLC's Parquet covers every month

YELLOW = Dataset(
    name="yellow",
    file_stem=_TRIP_STEM,
    pickup_column="tpep_pickup_datetime",
    first_month=dt.date(2009, 1, 1),
    course_csv=(dt.date(2019, 1, 1), _COURSE_CSV_LAST),
    columns=(
        Column("VendorID", CODE, values=VENDOR_CODES, derived=Derived("code", ("vendor_name",))),
        Column("tpep_pickup_datetime", TIME, ("Trip_Pickup_DateTime", "pickup_datetime")),
        Column("tpep_dropoff_datetime", TIME, ("Trip_Dropoff_DateTime", "dropoff_datetime")),
        Column("passenger_count", CODE),
        Column("trip_distance", AMOUNT),
        Column("RatecodeID", CODE, ("Rate_Code",)),
        Column("store_and_fwd_flag", TEXT, ("store_and_forward",), optional=True, values=STORE_AND_FORWARD),
        _YELLOW_PU,
        _YELLOW_DO,
        Column("payment_type", CODE, values=PAYMENT_CODES),
        Column("fare_amount", AMOUNT, ("Fare_Amt",)),
        Column("extra", AMOUNT, ("surcharge",)),
        Column("mta_tax", AMOUNT),
        Column("tip_amount", AMOUNT, ("Tip_Amt",)),
        Column("tolls_amount", AMOUNT, ("Tolls_Amt",)),
        Column("improvement_surcharge", AMOUNT, optional=True),  # from 2015; NULL in 2009-2014
        Column("total_amount", AMOUNT, ("Total_Amt",)),
        _CONGESTION,
        _AIRPORT,
        _CBD,
        # 2009-2010 only; NULL in every later month. 0 means unknown, as the TLC wrote it.
        Column("pickup_longitude", AMOUNT, ("Start_Lon",), optional=True),
        Column("pickup_latitude", AMOUNT, ("Start_Lat",), optional=True),
        Column("dropoff_longitude", AMOUNT, ("End_Lon",), optional=True),
        Column("dropoff_latitude", AMOUNT, ("End_Lat",), optional=True),
        # The vendor as 2009-2010 wrote it (VTS, CMT, DDS): DDS has no VendorID code.
        Column("vendor_name", TEXT, ("vendor_id",), optional=True),
    ),
)

GREEN = Dataset(
    name="green",
    file_stem=_TRIP_STEM,
    pickup_column="lpep_pickup_datetime",
    # Green trips began in 2013-08, but the TLC publishes them from 2014-01: 2013's months were CSV on a bucket
    # that is gone, and the course's backups start in 2019.
    first_month=dt.date(2014, 1, 1),
    course_csv=(dt.date(2019, 1, 1), _COURSE_CSV_LAST),
    columns=(
        Column("VendorID", CODE),
        Column("lpep_pickup_datetime", TIME),
        Column("lpep_dropoff_datetime", TIME),
        Column("store_and_fwd_flag", TEXT),
        Column("RatecodeID", CODE),
        _PU,
        _DO,
        Column("passenger_count", CODE),
        Column("trip_distance", AMOUNT),
        Column("fare_amount", AMOUNT),
        Column("extra", AMOUNT),
        Column("mta_tax", AMOUNT),
        Column("tip_amount", AMOUNT),
        Column("tolls_amount", AMOUNT),
        Column("ehail_fee", AMOUNT),
        Column("improvement_surcharge", AMOUNT),
        Column("total_amount", AMOUNT),
        Column("payment_type", CODE),
        Column("trip_type", CODE),
        _CONGESTION,
        _CBD,
    ),
)

_DISPATCHING_BASE = Column("dispatching_base_num", TEXT)
_PICKUP = Column("pickup_datetime", TIME)
_DROPOFF = Column("dropoff_datetime", TIME, ("dropOff_datetime",))
# The shared-ride flag is "1"/blank in FHV files and "N"/"Y" in the course's fhvhv backups.
_SR_FLAG = Column("SR_Flag", TEXT, optional=True)
_AFFILIATED_BASE = Column("Affiliated_base_number", TEXT, optional=True)

FHV = Dataset(
    name="fhv",
    file_stem=_TRIP_STEM,
    pickup_column="pickup_datetime",
    first_month=dt.date(2015, 1, 1),
    course_csv=(dt.date(2019, 1, 1), _COURSE_CSV_LAST),
    columns=(_DISPATCHING_BASE, _PICKUP, _DROPOFF, _PU, _DO, _SR_FLAG, _AFFILIATED_BASE),
)


def _optional(name: str, type_: pa.DataType) -> Column:
    return Column(name, type_, optional=True)


FHVHV = Dataset(
    name="fhvhv",
    file_stem=_TRIP_STEM,
    pickup_column="pickup_datetime",
    first_month=dt.date(2019, 2, 1),
    course_csv=(dt.date(2019, 2, 1), _COURSE_CSV_LAST),
    columns=(
        # The course's fhvhv backups are FHV-shaped: no licence number, but SR_Flag and the
        # affiliated base. Both layouts land in one schema.
        _optional("hvfhs_license_num", TEXT),
        _DISPATCHING_BASE,
        _optional("originating_base_num", TEXT),
        _optional("request_datetime", TIME),
        _optional("on_scene_datetime", TIME),
        _PICKUP,
        _DROPOFF,
        _PU,
        _DO,
        _optional("trip_miles", AMOUNT),
        _optional("trip_time", CODE),
        _optional("base_passenger_fare", AMOUNT),
        _optional("tolls", AMOUNT),
        _optional("bcf", AMOUNT),
        _optional("sales_tax", AMOUNT),
        _CONGESTION,
        _AIRPORT,
        _optional("tips", AMOUNT),
        _optional("driver_pay", AMOUNT),
        _optional("shared_request_flag", TEXT),
        _optional("shared_match_flag", TEXT),
        _optional("access_a_ride_flag", TEXT),
        _optional("wav_request_flag", TEXT),
        _optional("wav_match_flag", TEXT),
        _CBD,
        _SR_FLAG,
        _AFFILIATED_BASE,
    ),
)

ZONES = Dataset(
    name="zones",
    file_stem="taxi_zone_lookup",
    columns=(
        Column("LocationID", CODE),
        Column("Borough", TEXT),
        Column("Zone", TEXT),
        Column("service_zone", TEXT),
    ),
)

SERVICES: dict[str, Dataset] = {d.name: d for d in (YELLOW, GREEN, FHV, FHVHV)}

# Warehouse tables (PostgreSQL, BigQuery) carry the month of the file each row came from, so that a
# month is replaced exactly, rows whose pickup lies outside their file's month included.
LINEAGE_COLUMN = "source_month"


def table_name(dataset: Dataset) -> str:
    """The warehouse table of a dataset: yellow_tripdata, ..., zones."""
    return "zones" if dataset is ZONES else f"{dataset.name}_tripdata"


# pandas' to_csv writes its index as a first column with an empty name; read back and written
# again it becomes "Unnamed: 0".
_PANDAS_INDEX = re.compile(r"^(|Unnamed: \d+)$")
# pandas writes an unnamed index into Parquet as a column of this name, after the data columns.
_PANDAS_PARQUET_INDEX = re.compile(r"^__index_level_\d+__$")
_MONTH = re.compile(r"^(\d{4})-(\d{2})$")


def service(name: str) -> Dataset:
    try:
        return SERVICES[name]
    except KeyError:
        raise DataError(f"unknown service {name!r}; known services: {', '.join(SERVICES)}") from None


def parse_month(text: str) -> dt.date:
    """'2021-01' -> date(2021, 1, 1); anything else is a clear error."""
    match = _MONTH.match(text.strip())
    if not match or not 1 <= int(match.group(2)) <= 12:
        raise DataError(f"invalid month {text!r}: expected YYYY-MM, e.g. 2021-01")
    return dt.date(int(match.group(1)), int(match.group(2)), 1)


def next_month(month: dt.date) -> dt.date:
    return dt.date(month.year + month.month // 12, month.month % 12 + 1, 1)


def has_course_csv(dataset: Dataset, month: dt.date) -> bool:
    """True when the course's csv.gz backups have this month of the service."""
    return dataset.course_csv is not None and dataset.course_csv[0] <= month <= dataset.course_csv[1]


def check_month(dataset: Dataset, month: dt.date) -> None:
    if dataset.first_month and month < dataset.first_month:
        raise DataError(
            f"{dataset.name} {month:%Y-%m}: the TLC publishes {dataset.name} from "
            f"{dataset.first_month:%Y-%m} on, not before"
        )


@dataclass(frozen=True)
class ColumnPlan:
    """How one source file's columns map onto the canonical schema."""

    read: tuple[tuple[str, Column], ...]  # (source spelling, canonical column), in source order
    missing: tuple[Column, ...]  # optional columns this file lacks: written as NULL
    dropped: tuple[str, ...]  # source columns that are not read (a pandas index, or unknown when dropping)
    derived: tuple[Column, ...] = ()  # columns this file lacks, computed from its others (see Derived)
    added: tuple[str, ...] = ()  # columns the catalogue does not know, kept after the canonical ones


NEW_COLUMN_POLICIES = ("keep", "drop", "refuse")


def plan_columns(dataset: Dataset, header: Sequence[str], *, where: str, new_columns: str = "refuse") -> ColumnPlan:
    """Match a source header against the catalogue.

    `where` names the file and month for error messages. A column the catalogue does not know is kept after the
    canonical ones (`new_columns` "keep"), dropped ("drop") or an error ("refuse"); required columns that are
    absent are always an error.
    """
    read: list[tuple[str, Column]] = []
    dropped: list[str] = []
    unknown: list[str] = []
    seen: dict[str, str] = {}
    for position, name in enumerate(header):
        if (position == 0 and _PANDAS_INDEX.match(name.strip())) or _PANDAS_PARQUET_INDEX.match(name):
            dropped.append(name)
            continue
        if position == len(header) - 1 and position > 0 and not name.strip():
            # A comma at the end of every line: a last column with no name and, in the TLC's copies, no values.
            dropped.append(name)
            continue
        column = dataset.column_for(name)
        if column is None:
            unknown.append(name)
            continue
        if column.name in seen:
            raise DataError(f"{where}: columns {seen[column.name]!r} and {name!r} both mean {column.name!r}")
        seen[column.name] = name
        read.append((name, column))
    if unknown and new_columns == "refuse":
        raise DataError(
            f"{where}: unknown column{'s' if len(unknown) > 1 else ''} "
            f"{', '.join(repr(u) for u in unknown)}; the {dataset.name} catalogue knows "
            f"{', '.join(c.name for c in dataset.columns)}; [tlc] new_columns = keep keeps such columns"
        )
    if new_columns != "keep":
        dropped.extend(unknown)
    derived = [c for c in dataset.columns if c.name not in seen and c.derived and set(c.derived.inputs) <= set(seen)]
    absent = [c for c in dataset.columns if c.name not in seen and c not in derived]
    required = [c.name for c in absent if not c.optional]
    if required:
        raise DataError(f"{where}: missing required column{'s' if len(required) > 1 else ''} {', '.join(required)}")
    added = tuple(unknown) if new_columns == "keep" else ()
    return ColumnPlan(
        read=tuple(read), missing=tuple(absent), dropped=tuple(dropped), derived=tuple(derived), added=added
    )


def packed_scalar(type_: pa.DataType, fmt: str, value: float) -> pa.Scalar:
    """A fixed-width Arrow scalar made from its bytes (`fmt` in struct's notation, e.g. "<d").

    pa.scalar() and pa.array() of Python values import pandas where it is installed: a third of a second and
    40 MB in every process that converts or loads, which needs nothing from pandas.
    """
    return pa.Array.from_buffers(type_, 1, [None, pa.py_buffer(struct.pack(fmt, value))])[0]
