"""tests/ and bench/ share code only through harness/: neither imports the other, harness/ imports neither,
and the daemon's package imports none of the three."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
# Which top-level packages each folder may not import.
FORBIDDEN = {
    "tests": {"bench"},
    "bench": {"tests"},
    "harness": {"tests", "bench"},
    "tools": {"tests", "bench"},
    "server": {"tests", "bench", "harness"},
}


def imported_packages(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("folder", list(FORBIDDEN))
def test_no_folder_imports_what_it_must_not(folder: str) -> None:
    files = sorted((REPO / folder).rglob("*.py"))
    assert files, f"no Python files under {folder}/"
    wrong = {
        str(path.relative_to(REPO)): sorted(imported_packages(path) & FORBIDDEN[folder])
        for path in files
        if imported_packages(path) & FORBIDDEN[folder]
    }
    assert not wrong, f"{folder}/ imports what it must not (share it through harness/): {wrong}"
