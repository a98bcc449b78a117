"""Flows compose tasks and hold no business logic: the fan-out over threads, processes and queues is a task's work
(tasks/delivery/fanout.py, tasks/delivery/spread.py), and no flow function grows past the house limit."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from bulletin.settings import PROJECT_ROOT

FLOWS = sorted((PROJECT_ROOT / "flows").glob("*.py"))
#: What a fan-out is built from; a flow that imports one is doing a task's work.
PLUMBING = {"contextvars", "multiprocessing", "queue", "threading", "prefect.futures", "prefect.utilities.annotations"}
LONGEST_FUNCTION = 60


def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), filename=str(path))


@pytest.mark.parametrize("path", FLOWS, ids=lambda p: p.name)
def test_a_flow_imports_no_fan_out_plumbing(path: Path) -> None:
    imported = set()
    for node in ast.walk(_tree(path)):
        if isinstance(node, ast.Import):
            imported |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module)
    assert not imported & PLUMBING, f"{path.name} imports {sorted(imported & PLUMBING)}"


@pytest.mark.parametrize("path", FLOWS, ids=lambda p: p.name)
def test_no_flow_function_is_longer_than_the_limit(path: Path) -> None:
    for node in ast.walk(_tree(path)):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            length = (node.end_lineno or node.lineno) - node.lineno + 1
            assert length <= LONGEST_FUNCTION, f"{path.name}: {node.name} is {length} lines"
