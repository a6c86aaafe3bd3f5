"""Values of older eras in today's terms: spellings mapped to codes, and columns derived from others.

The catalogue says what (a Column's `values` and `derived`); this module does it, batch by batch, and counts what
it could not map, so that the manifest says how many values became NULL and why.
"""

from __future__ import annotations

import collections
import dataclasses
import struct
from itertools import accumulate

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from luigi_tasks.catalog import CODE, TEXT, Column, packed_scalar

_SHOWN_VALUES = 20  # distinct unmapped spellings kept per column; the rest are counted under "(other)"
_WHOLE_NUMBER = r"^-?[0-9]+(\.0*)?$"


@dataclasses.dataclass
class NullCounts:
    """Values a conversion kept as NULL, by column: NaN codes, spellings without a code, points in no zone."""

    nan_codes: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)
    without_code: dict[str, collections.Counter[str]] = dataclasses.field(default_factory=dict)
    zones: dict[str, collections.Counter[str]] = dataclasses.field(default_factory=dict)

    def add_without_code(self, column: str, counts: list[dict]) -> None:
        found = self.without_code.setdefault(column, collections.Counter())
        for item in counts:
            value = item["values"]
            shown = value if value in found or len(found) < _SHOWN_VALUES else "(other)"
            found[shown] += item["counts"]


def is_text(type_: pa.DataType) -> bool:
    return pa.types.is_string(type_) or pa.types.is_large_string(type_)


def needs_map(column: Column, source_type: pa.DataType) -> bool:
    """Numbers in a text column whose older spellings are known (2009's store_and_forward)."""
    return bool(column.values) and column.type == TEXT and not is_text(source_type)


def has_spellings(column: Column, values: pa.Array) -> bool:
    """Text in a code column that holds the column's older spellings: the file is of that era. (Other text in a
    code column stays an error: "x" or "1.5" in a month of today's files is a broken file.)"""
    if not column.values or column.type == TEXT or not is_text(values.type):
        return False
    key = pc.utf8_lower(pc.utf8_trim_whitespace(pc.cast(values, pa.string())))
    return bool(pc.any(pc.is_in(key, value_set=text_array([spelling for spelling, _ in column.values]))).as_py())


def mapped(values: pa.Array, column: Column, counts: NullCounts) -> pa.Array:
    """`values` through the column's map of spellings (compared lower-cased, trimmed). A code column also takes whole
    numbers written as text; other text is NULL, counted. A text column keeps what the map lacks as written."""
    text = values if is_text(values.type) else pc.cast(values, pa.string())
    key = pc.utf8_lower(pc.utf8_trim_whitespace(pc.cast(text, pa.string())))
    spellings = text_array([spelling for spelling, _ in column.values])
    targets = _target_array([target for _, target in column.values], column.type)
    found = pc.take(targets, pc.index_in(key, value_set=spellings))
    unmapped = pc.and_(pc.is_valid(key), pc.is_null(found))
    if not pc.any(unmapped).as_py():
        return found
    if column.type == TEXT:
        return pc.coalesce(found, pc.cast(text, pa.string()))
    numeric = pc.and_(unmapped, pc.match_substring_regex(key, _WHOLE_NUMBER))
    if pc.any(numeric).as_py():
        numbers = pc.cast(pc.cast(pc.if_else(numeric, key, pa.nulls(1, pa.string())[0]), pa.float64()), CODE)
        found = pc.coalesce(found, numbers)
    lacking = pc.filter(pc.cast(text, pa.string()), pc.and_(unmapped, pc.invert(numeric)))
    if len(lacking):
        counts.add_without_code(column.name, pc.value_counts(lacking).to_pylist())
    return found


def derived(column: Column, arrays: dict[str, pa.Array], counts: NullCounts) -> pa.Array:
    """The column computed from the batch's canonical `arrays`, as its Derived says."""
    assert column.derived is not None
    inputs = [arrays[name] for name in column.derived.inputs]
    if column.derived.how == "code":
        return mapped(inputs[0], column, counts)
    if column.derived.how == "zone":
        return _zone_ids(column.name, *inputs, counts)
    raise ValueError(f"{column.name}: no derivation {column.derived.how!r}")


def _zone_ids(name: str, longitude: pa.Array, latitude: pa.Array, counts: NullCounts) -> pa.Array:
    from luigi_tasks.zone_shapes import zone_shapes  # shapely and pyproj: only for the months with coordinates

    ids, known = zone_shapes().zone_ids(_floats(longitude), _floats(latitude))
    valid = ids != 0
    tally = counts.zones.setdefault(name, collections.Counter())
    tally["no coordinates"] += int((~known).sum())
    tally["in no zone"] += int((known & ~valid).sum())
    return numpy_array(ids, CODE, valid)


def _floats(values: pa.Array) -> np.ndarray:
    """A float64 array as numpy, NULL as NaN, from its buffer (to_numpy() would import pandas where installed)."""
    whole = pc.fill_null(values, packed_scalar(pa.float64(), "<d", float("nan"))) if values.null_count else values
    return np.frombuffer(whole.buffers()[1], dtype=np.float64, count=len(whole), offset=whole.offset * 8)


def numpy_array(values: np.ndarray, type_: pa.DataType, valid: np.ndarray | None = None) -> pa.Array:
    """A fixed-width numpy array as Arrow, without a copy (pa.array() would import pandas where it is installed)."""
    bitmap = None if valid is None else pa.py_buffer(np.packbits(valid, bitorder="little"))
    nulls = -1 if valid is None else int(valid.size - valid.sum())
    return pa.Array.from_buffers(type_, values.size, [bitmap, pa.py_buffer(np.ascontiguousarray(values))], nulls)


def text_array(values: list[str]) -> pa.Array:
    """Strings as an Arrow string array, made from its buffers (see numpy_array)."""
    data = [value.encode() for value in values]
    offsets = struct.pack(f"<{len(data) + 1}i", *accumulate(map(len, data), initial=0))
    return pa.Array.from_buffers(pa.string(), len(data), [None, pa.py_buffer(offsets), pa.py_buffer(b"".join(data))])


def _target_array(values: list, type_: pa.DataType) -> pa.Array:
    if type_ == TEXT:
        return text_array(values)
    return numpy_array(np.asarray(values, dtype=np.int64), type_)
