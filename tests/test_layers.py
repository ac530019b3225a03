"""The daemon's packages form layers: each imports only the parts listed below it here.

A newcomer can read the daemon from the bottom up (store, ledger, the ways
in, the process) and trust that nothing lower reaches back up. An import
that breaks this fails here, naming the module and what it imported.
"""

from __future__ import annotations

import ast
from pathlib import Path

import aivcs_ledgerd

PACKAGE = Path(aivcs_ledgerd.__file__).parent
BASE = {"util", "model", "methods", "__version__"}

# What each part may import besides itself. Order is bottom-up.
ALLOWED: dict[str, set[str]] = {
    "util": set(),
    "model": {"util"},
    "methods": set(),
    "store": BASE,
    "ledger": BASE | {"store"},
    "config": BASE | {"ledger"},
    "upkeep": BASE | {"store"},
    "middleware": BASE | {"config", "ledger", "store"},
    # The ways in know the ledger only: its errors, keys and limits; never the store's.
    "transport": BASE | {"config", "ledger"},
    "otlp": BASE | {"config", "ledger", "transport"},
    "http": BASE | {"config", "ledger", "transport", "middleware"},
    "process": BASE | {"config", "ledger", "store", "upkeep", "middleware", "transport", "otlp", "http"},
    "__main__": {"process"},
}


def _part(module: str) -> str:
    """The part a dotted module name belongs to: its subpackage, or the root module itself."""
    names = module.split(".")
    return names[1] if len(names) > 1 else "__init__"


def _imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith("aivcs_ledgerd."))
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "aivcs_ledgerd":
                found.update(f"aivcs_ledgerd.{alias.name}" for alias in node.names)
            elif node.module.startswith("aivcs_ledgerd."):
                found.add(node.module)
    return found


def _modules() -> list[tuple[str, Path]]:
    out = []
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE.parent).with_suffix("")
        out.append((".".join(relative.parts), path))
    return out


def test_every_part_is_known() -> None:
    parts = {_part(module) for module, _ in _modules()} - {"__init__"}
    assert parts == set(ALLOWED), "a new package or root module needs its place in ALLOWED"


def test_no_part_imports_one_above_it() -> None:
    wrong = []
    for module, path in _modules():
        source = _part(module)
        if source == "__init__":
            continue
        for imported in _imports(path):
            target = _part(imported)
            if target != source and target not in ALLOWED[source]:
                wrong.append(f"{module} imports {imported}")
    assert wrong == []


def test_the_rule_itself_has_no_cycle() -> None:
    # A part that (transitively) may import itself would make "below" meaningless.
    def below(part: str, seen: frozenset[str]) -> None:
        for lower in ALLOWED.get(part, set()):
            assert lower not in seen, f"{lower} and {part} may import each other"
            below(lower, seen | {lower})

    for part in ALLOWED:
        below(part, frozenset({part}))
