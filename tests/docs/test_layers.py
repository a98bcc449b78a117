"""The layer map cannot drift: the README's table names what is there, and the imports it describes have no circle.

The direction of the imports is held by the import-linter contracts in pyproject.toml (``make lint``); these tests
need nothing but the standard library, so they also run where import-linter is not installed.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

from bulletin.settings import PROJECT_ROOT

SOURCES = ("bulletin", "tasks", "flows")
README = (PROJECT_ROOT / "README.md").read_text()


def layer_map() -> dict[str, list[str]]:
    """The names each row of the README's "Layer map" table lists, by its folder (rows of one folder are joined)."""
    section = README.split("\n## Layer map\n", 1)[1].split("\n## ", 1)[0]
    rows: dict[str, list[str]] = {}
    for line in section.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if not line.startswith("|") or len(cells) < 2 or not cells[0].startswith("`"):
            continue
        folder = re.findall(r"`([^`]+)`", cells[0])[0]
        rows.setdefault(folder, []).extend(re.findall(r"`([a-z_][a-z0-9_]*/?)`", cells[1]))
    return rows


def test_the_layer_map_names_every_source_folder() -> None:
    folders = {
        f"{path.relative_to(PROJECT_ROOT).as_posix()}/"
        for root in SOURCES
        for path in [PROJECT_ROOT / root, *(PROJECT_ROOT / root).rglob("*")]
        if (path / "__init__.py").is_file() and "migrations" not in path.parts
    }
    assert folders <= set(layer_map()), f"missing from the README's layer map: {sorted(folders - set(layer_map()))}"


def test_the_layer_map_names_every_module_of_tasks_flows_and_the_core() -> None:
    rows = layer_map()
    packages = [
        p.parent.relative_to(PROJECT_ROOT).as_posix() + "/" for p in (PROJECT_ROOT / "tasks").rglob("__init__.py")
    ]
    for folder in sorted({*packages, "bulletin/", "flows/"}):
        present = {path.stem for path in (PROJECT_ROOT / folder).glob("*.py") if path.stem != "__init__"}
        named = {name for name in rows[folder] if not name.endswith("/")}
        assert present <= named, f"{folder}: not in the layer map: {sorted(present - named)}"


def test_every_module_the_layer_map_names_exists() -> None:
    for folder, names in layer_map().items():
        if folder.split("/")[0] not in SOURCES:
            continue
        for name in names:
            path = PROJECT_ROOT / folder / name
            assert path.with_suffix(".py").is_file() or (path / "__init__.py").is_file(), f"{folder}{name} is gone"


def test_the_layer_map_says_what_enforces_it() -> None:
    section = README.split("\n## Layer map\n", 1)[1].split("\n## ", 1)[0]
    assert "`make lint`" in section and "import-linter" in section


def _modules() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for root in SOURCES:
        for path in (PROJECT_ROOT / root).rglob("*.py"):
            parts = path.relative_to(PROJECT_ROOT).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(path: Path, known: set[str]) -> set[str]:
    """The modules of ours that ``path`` imports, at any depth (lazy imports too), except those for type checking."""
    tree = ast.parse(path.read_text())
    type_only = {
        id(node)
        for block in ast.walk(tree)
        if isinstance(block, ast.If) and _is_type_checking(block.test)
        for statement in block.body
        for node in ast.walk(statement)
    }
    targets: list[str] = []
    for node in ast.walk(tree):
        if id(node) in type_only:
            continue
        if isinstance(node, ast.Import):
            targets += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            targets += [f"{node.module}.{alias.name}" for alias in node.names]
    found = set()
    for target in targets:
        while target and target not in known:  # ``from a.b import name``: the module a.b, unless a.b.name is one
            target = target.rpartition(".")[0]
        if target:
            found.add(target)
    return found


def test_no_import_circle() -> None:
    modules = _modules()
    graph = {name: _imports(path, set(modules)) - {name} for name, path in modules.items()}

    def reachable(start: str) -> set[str]:
        seen: set[str] = set()
        todo = list(graph[start])
        while todo:
            name = todo.pop()
            if name not in seen:
                seen.add(name)
                todo += graph[name]
        return seen

    reach = {name: reachable(name) for name in graph}
    circles = {tuple(sorted(other for other in reach[name] if name in reach[other])) for name in graph}
    circles.discard(())
    assert not circles, f"import circles: {sorted(circles)}"
