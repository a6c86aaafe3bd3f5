"""Quality of a month: how many rows fail each check, judged against a warn and a fail level.

Each check is a fraction of the month's rows (row_change: of the previous month's rows). A month over a
fail level is refused at conversion; over a warn level it is published, and the finding is recorded in its
manifest. The counts are taken batch by batch during the conversion, with pyarrow.compute, in one pass.
"""

from __future__ import annotations

import dataclasses

import pyarrow as pa
import pyarrow.compute as pc

from luigi_tasks.catalog import Dataset, packed_scalar
from luigi_tasks.errors import DataError

# check -> (warn, fail): the default levels, as fractions. Real months have a few refunds (negative amounts),
# pickups outside their month and meter glitches; a month far beyond these is a broken file.
DEFAULT_LEVELS: dict[str, tuple[float, float]] = {
    "null_pickup": (0.001, 0.05),
    "outside_month": (0.001, 0.05),
    "negative_amount": (0.01, 0.2),
    "absurd_amount": (0.0001, 0.01),
    "negative_distance": (0.001, 0.05),
    "absurd_distance": (0.0001, 0.01),
    "unknown_location": (0.001, 0.05),
    "row_change": (0.5, 0.95),  # |rows - previous month's rows| / previous month's rows, judged at status time
}
CHECKS = tuple(DEFAULT_LEVELS)
DEFAULT_MAX_AMOUNT = 5_000.0  # dollars: fare_amount, total_amount, base_passenger_fare
DEFAULT_MAX_DISTANCE = 500.0  # miles: trip_distance, trip_miles

# The columns each check reads, where the service has them (the services' columns differ: see the catalogue).
AMOUNT_COLUMNS = ("fare_amount", "total_amount", "base_passenger_fare")
DISTANCE_COLUMNS = ("trip_distance", "trip_miles")
LOCATION_COLUMNS = ("PULocationID", "DOLocationID")


@dataclasses.dataclass(frozen=True)
class Limits:
    """The levels of every check ({check: (warn, fail)}) and the largest amount and distance that are not absurd."""

    levels: dict[str, tuple[float, float]] = dataclasses.field(default_factory=lambda: dict(DEFAULT_LEVELS))
    max_amount: float = DEFAULT_MAX_AMOUNT
    max_distance: float = DEFAULT_MAX_DISTANCE


@dataclasses.dataclass(frozen=True)
class Finding:
    """A check over its warn (or fail) level: how many rows, which fraction, and the level it passed."""

    check: str
    level: str  # "warn" or "fail"
    rows: int
    fraction: float
    threshold: float

    def text(self) -> str:
        rows = f"{self.rows:,} row{'s' * (self.rows != 1)}"
        return f"{self.check} {rows} ({self.fraction:.2%}) > {self.level} {self.threshold:g}"


@dataclasses.dataclass(frozen=True)
class Quality:
    """Rows failing each check of this module (null pickups and rows outside the month are the manifest's own
    counts), and the findings over a warn level when the month was converted."""

    counts: dict[str, int]
    findings: tuple[Finding, ...] = ()

    @classmethod
    def from_dict(cls, fields: dict) -> Quality:
        return cls(dict(fields["counts"]), tuple(Finding(**f) for f in fields.get("findings", ())))


def judge(check: str, rows: int, total: int, limits: Limits) -> Finding | None:
    """The finding of a check that `rows` of `total` fail, or None when it is under its warn level."""
    if total <= 0:
        return None
    fraction = rows / total
    warn, fail = limits.levels[check]
    for level, threshold in (("fail", fail), ("warn", warn)):
        if fraction > threshold:
            return Finding(check, level, rows, fraction, threshold)
    return None


def row_change(rows: int, previous_rows: int, limits: Limits) -> Finding | None:
    """Month over month: the change of the row count as a fraction of the previous month's."""
    return judge("row_change", abs(rows - previous_rows), previous_rows, limits)


class QualityCounter:
    """Fed every converted batch; counts the rows that fail each check this service's columns allow."""

    def __init__(self, dataset: Dataset, limits: Limits | None = None, zone_ids: pa.Array | None = None) -> None:
        names = set(dataset.schema.names)
        self.dataset = dataset
        self.limits = limits
        self.amounts = [c for c in AMOUNT_COLUMNS if c in names]
        self.distances = [c for c in DISTANCE_COLUMNS if c in names]
        # No lookup, no location check (the zone lookup itself, or a caller without one).
        self.locations = [c for c in LOCATION_COLUMNS if c in names] if zone_ids is not None else []
        self.zone_ids = zone_ids
        self.counts = dict.fromkeys(self.checks, 0)
        max_amount = (limits or Limits()).max_amount
        max_distance = (limits or Limits()).max_distance
        self._amount_bounds = (_float(0.0), _float(max_amount))
        self._distance_bounds = (_float(0.0), _float(max_distance))

    @property
    def checks(self) -> list[str]:
        checks = []
        if self.amounts:
            checks += ["negative_amount", "absurd_amount"]
        if self.distances:
            checks += ["negative_distance", "absurd_distance"]
        if self.locations:
            checks.append("unknown_location")
        return checks

    def add(self, table: pa.Table | pa.RecordBatch) -> None:
        if self.amounts:
            self._count_out_of_bounds(table, self.amounts, self._amount_bounds, "negative_amount", "absurd_amount")
        if self.distances:
            self._count_out_of_bounds(
                table, self.distances, self._distance_bounds, "negative_distance", "absurd_distance"
            )
        if self.locations:
            # A blank id is not an unknown zone (FHV months leave many blank): only ids the lookup lacks count.
            unknown = _any_row(_unknown_ids(table.column(c), self.zone_ids) for c in self.locations)
            self.counts["unknown_location"] += _true(unknown)

    def _count_out_of_bounds(self, table, columns: list[str], bounds, below: str, above: str) -> None:
        low, high = bounds
        self.counts[below] += _true(_any_row(pc.less(table.column(c), low) for c in columns))
        self.counts[above] += _true(_any_row(pc.greater(table.column(c), high) for c in columns))

    def result(self, label: str, rows: int, rows_without_pickup: int, rows_outside_month: int) -> Quality | None:
        """The month's quality; a DataError naming the month, check, value and level when one is over its fail
        level (the caller then publishes nothing). None for a dataset without trips (the zone lookup)."""
        if self.dataset.pickup_column is None:
            return None
        if self.limits is None:
            return Quality(dict(self.counts))
        counted = {"null_pickup": rows_without_pickup, "outside_month": rows_outside_month, **self.counts}
        findings = tuple(f for check, n in counted.items() if (f := judge(check, n, rows, self.limits)) is not None)
        for finding in findings:
            if finding.level == "fail":
                raise DataError(
                    f"{label}: quality check {finding.check} failed: {finding.rows:,} of {rows:,} rows "
                    f"({finding.fraction:.2%}) > [quality] {finding.check}_fail {finding.threshold:g}; "
                    "the month is not published"
                )
        return Quality(dict(self.counts), findings)


def _any_row(conditions) -> pa.Array:
    """Row-wise OR where a NULL (a blank value) counts as false."""
    result = None
    for condition in conditions:
        result = condition if result is None else pc.or_kleene(result, condition)
    return result


def _unknown_ids(ids, known: pa.Array):
    # is_in says false for a NULL: a blank id is not an unknown one.
    return pc.and_(pc.is_valid(ids), pc.invert(pc.is_in(ids, value_set=known)))


def _true(mask) -> int:
    return pc.sum(mask).as_py() or 0


def _float(value: float) -> pa.Scalar:
    return packed_scalar(pa.float64(), "<d", value)
