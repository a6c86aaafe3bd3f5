"""docs/reliability.md stays true: every test it names exists, and every fault and bad-input test is named."""

import ast
import re

from tests.conftest import REPO


def test_every_test_named_in_the_reliability_table_exists():
    named = re.findall(r"`(tests/[\w/]+\.py)::(\w+)`", (REPO / "docs/reliability.md").read_text())
    assert len(named) >= 40
    missing = []
    for path, name in named:
        tree = ast.parse((REPO / path).read_text())
        functions = {node.name for node in ast.walk(tree) if isinstance(node, ast.FunctionDef)}
        if name not in functions:
            missing.append(f"{path}::{name}")
    assert missing == []


def test_every_fault_and_bad_input_test_is_in_the_reliability_table():
    documented = set(re.findall(r"`(tests/[\w/]+\.py::\w+)`", (REPO / "docs/reliability.md").read_text()))
    suites = ("test_faults.py", "test_cloud_faults.py", "test_bad_input.py", "test_secrets.py")
    tests = [
        f"tests/{suite}::{node.name}"
        for suite in suites
        for node in ast.parse((REPO / "tests" / suite).read_text()).body
        if isinstance(node, ast.FunctionDef) and node.name.startswith("test_")
    ]
    assert len(tests) >= 20
    assert [test for test in tests if test not in documented] == []
