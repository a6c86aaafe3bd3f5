"""SQL names and table shapes that every warehouse sink checks the same way."""

from __future__ import annotations

import re
from collections.abc import Collection, Sequence
from typing import TYPE_CHECKING

from luigi_tasks.errors import DataError

if TYPE_CHECKING:
    import datetime as dt

    import pyarrow as pa

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
IDENTIFIER_RULE = "a plain SQL identifier (letters, digits, _; at most 63)"


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def quote_literal(text: str) -> str:
    """A SQL string literal, for statements that take no parameters (DuckDB's COMMENT ON)."""
    return "'" + text.replace("'", "''") + "'"


def is_identifier(name: str) -> bool:
    return bool(_IDENTIFIER.match(name))


def checked_identifier(name: str, what: str) -> str:
    """Table and schema names come from config: allow plain identifiers only."""
    if not is_identifier(name):
        raise DataError(f"{what} {name!r} is not {IDENTIFIER_RULE}")
    return name


def column_problems(
    found: list[tuple[str, str]], expected: list[tuple[str, str]], *, case_sensitive: bool = True
) -> list[str]:
    """How a table's (column, type) list differs from the expected one: missing, unexpected, other types.

    Names match as the database matches them: exactly (PostgreSQL's quoted identifiers), or in any case
    (case_sensitive False: DuckDB's); a type difference is named as the table spells the column."""
    key = (lambda name: name) if case_sensitive else str.lower
    found_by_key = {key(name): (name, type_) for name, type_ in found}
    expected_keys = {key(name) for name, _ in expected}
    problems = []
    missing = [n for n, _ in expected if key(n) not in found_by_key]
    extra = [n for n, _ in found if key(n) not in expected_keys]
    if missing:
        problems.append("missing " + ", ".join(missing))
    if extra:
        problems.append("unexpected " + ", ".join(extra))
    differing = [(found_by_key[key(n)], t) for n, t in expected if key(n) in found_by_key]
    return problems + [f"{name} is {type_}, expected {t}" for (name, type_), t in differing if type_ != t]


# A column a load adds to a table records the month that brought it (a comment, or a BigQuery description).
ADDED_BY = "added by "


def added_by(dataset_name: str, month: dt.date | None) -> str:
    """The note on a column a load adds: 'added by yellow 2026-06' (the zones table: 'added by the zone lookup')."""
    return ADDED_BY + (f"{dataset_name} {month:%Y-%m}" if month else "the zone lookup")


def file_columns(schema: pa.Schema, types: dict[pa.DataType, str], what: str) -> list[tuple[str, str, str]]:
    """A lake file's columns as (name, the warehouse's type, the file's type), in the file's order.

    The converter writes int64, double, string and timestamp[us] only: another type is a file it did not write."""
    columns = []
    for field in schema:
        if field.type not in types:
            raise DataError(
                f"{what}: column {field.name} of this file is {field.type}, which no warehouse column takes"
                f" ({', '.join(sorted(str(t) for t in types))}); nothing was loaded"
            )
        columns.append((field.name, types[field.type], str(field.type)))
    return columns


def is_ours(
    found: Sequence[tuple[str, str]],
    expected: Sequence[tuple[str, str]],
    required: Collection[str],
    *,
    case_sensitive: bool = True,
) -> bool:
    """Whether a table is one a load made, maybe by an earlier release with fewer columns: the `required` columns
    (the lineage column; every column, for a table without one) are there and every column it has that the
    catalogue names has the catalogue's type. Its other columns are an earlier month's new ones."""
    key = (lambda name: name) if case_sensitive else str.lower
    types = {key(name): type_ for name, type_ in found}
    return all(key(name) in types for name in required) and all(types.get(key(n), t) == t for n, t in expected)


def columns_to_add(
    found: Sequence[tuple[str, str, str | None]],
    expected: Sequence[tuple[str, str]],
    incoming: Sequence[tuple[str, str, str]],
    *,
    case_sensitive: bool = True,
    what: str,
    table: str,
    in_file: str = "this month's file",
) -> list[tuple[str, str]]:
    """The (name, type) columns a table of ours lacks: the catalogue's, then the file's (`file_columns`), in order.

    `found` is the table's (name, type, note) list. A file column the table has with another type is an error
    naming both types and the month that added the column (its note)."""
    key = (lambda name: name) if case_sensitive else str.lower
    present = {key(name): (name, type_, note) for name, type_, note in found}
    for name, type_, file_type in incoming:
        if key(name) in present and present[key(name)][1] != type_:
            _, table_type, note = present[key(name)]
            since = f" since {note.removeprefix(ADDED_BY)}" if note and note.startswith(ADDED_BY) else ""
            raise DataError(
                f"{what}: column {name} is {file_type} in {in_file},"
                f" but {table_type} in table {table}{since}; nothing was loaded"
            )
    added: dict[str, tuple[str, str]] = {}
    for name, type_ in [*expected, *((name, type_) for name, type_, _ in incoming)]:
        if key(name) not in present:
            added.setdefault(key(name), (name, type_))
    return list(added.values())
