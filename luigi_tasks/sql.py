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


def column_problems(found: list[tuple[str, str]], expected: list[tuple[str, str]]) -> list[str]:
    """How a table's (column, type) list differs from the expected one: missing, unexpected, other types."""
    found_types, expected_types = dict(found), dict(expected)
    problems = []
    missing = [n for n, _ in expected if n not in found_types]
    extra = [n for n, _ in found if n not in expected_types]
    if missing:
        problems.append("missing " + ", ".join(missing))
    if extra:
        problems.append("unexpected " + ", ".join(extra))
    return problems + [
        f"{n} is {found_types[n]}, expected {t}" for n, t in expected if n in found_types and found_types[n] != t
    ]
