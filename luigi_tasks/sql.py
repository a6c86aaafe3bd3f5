"""SQL names and table shapes that every warehouse sink checks the same way."""

from __future__ import annotations

import re

from luigi_tasks.errors import DataError

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
IDENTIFIER_RULE = "a plain SQL identifier (letters, digits, _; at most 63)"


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


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
