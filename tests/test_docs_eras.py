"""docs/eras.md stays true: it names every spelling the catalogue reads and every value it maps."""

from luigi_tasks.catalog import SERVICES, YELLOW
from tests.conftest import REPO

PAGE = (REPO / "docs" / "eras.md").read_text()


def test_every_alias_of_the_catalogue_is_on_the_page():
    missing = [
        f"{dataset.name}.{column.name}: {alias}"
        for dataset in SERVICES.values()
        for column in dataset.columns
        for alias in column.aliases
        if f"`{alias}`" not in PAGE
    ]
    assert missing == []


def test_every_value_map_is_on_the_page_as_the_catalogue_has_it():
    for column in YELLOW.columns:
        for spelling, code in column.values:
            shown = f"`{spelling}`" if spelling.isdigit() else spelling
            assert shown in PAGE.lower() or f"`{spelling.upper()}`" in PAGE, (column.name, spelling)
            assert f"| {code}" in PAGE or f"`{code}`" in PAGE, (column.name, code)


def test_every_derived_column_and_the_first_months_are_on_the_page():
    for dataset in SERVICES.values():
        for column in dataset.columns:
            if column.derived:
                assert f"`{column.name}`" in PAGE
                assert all(f"`{name}`" in PAGE for name in column.derived.inputs)
        if dataset.first_month:
            assert f"{dataset.first_month:%Y-%m}" in PAGE, dataset.name
