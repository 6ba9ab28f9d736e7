"""The package's layout: no import cycles between pgqueue_py's modules.

The graph comes from the source (``ast``), not from importing it: every ``import`` and
``from ... import`` anywhere in a module counts, including those under ``if TYPE_CHECKING:``
and inside functions, since a reader has to follow them all the same. ``from pkg import
name`` points at the module ``pkg.name`` when there is one, else at ``pkg``. Importing
``pkg.mod`` also runs ``pkg/__init__.py``, but that implicit edge is left out: a package
that re-exports its own modules would otherwise always be a cycle.
"""

from __future__ import annotations

import ast
from collections.abc import Mapping
from pathlib import Path

PACKAGE = "pgqueue_py"
SOURCE_ROOT = Path(__file__).resolve().parents[1]

Graph = Mapping[str, frozenset[str]]


def module_files(root: Path, package: str) -> dict[str, Path]:
    """Every module of ``package`` under ``root``, by dotted name."""
    modules: dict[str, Path] = {}
    for path in sorted((root / package).rglob("*.py")):
        parts = path.relative_to(root).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    return modules


def imported_modules(module: str, path: Path, known: set[str]) -> set[str]:
    """The modules among ``known`` that ``module`` (the file ``path``) imports."""
    is_package = path.name == "__init__.py"
    targets: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: from the module's own package, then up
                here = module.split(".") if is_package else module.split(".")[:-1]
                anchor = here[: len(here) - (node.level - 1)]
                base = ".".join([*anchor, *([node.module] if node.module else [])])
            else:
                base = node.module or ""
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                targets.add(submodule if submodule in known else base)
    return {t for t in targets if t in known and t != module}


def import_graph(root: Path, package: str) -> Graph:
    modules = module_files(root, package)
    known = set(modules)
    return {name: frozenset(imported_modules(name, path, known)) for name, path in modules.items()}


def find_cycle(graph: Graph) -> list[str] | None:
    """One import cycle as a path that ends where it starts, or None."""
    done: set[str] = set()
    for start in sorted(graph):
        if start in done:
            continue
        path: list[str] = [start]
        on_path = {start}
        stack = [iter(sorted(graph[start]))]
        while stack:
            target = next(stack[-1], None)
            if target is None:
                stack.pop()
                finished = path.pop()
                on_path.discard(finished)
                done.add(finished)
                continue
            if target in on_path:
                return [*path[path.index(target) :], target]
            if target not in done:
                path.append(target)
                on_path.add(target)
                stack.append(iter(sorted(graph.get(target, ()))))
    return None


def test_pgqueue_py_has_no_import_cycle() -> None:
    cycle = find_cycle(import_graph(SOURCE_ROOT, PACKAGE))

    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_the_graph_holds_the_package_imports_including_type_checking_ones() -> None:
    graph = import_graph(SOURCE_ROOT, PACKAGE)

    assert "pgqueue_py.cli.demo" in graph["pgqueue_py.cli.commands"]
    assert "pgqueue_py.client._sql" in graph["pgqueue_py.client.queue"]  # from pkg import mod
    assert "pgqueue_py.migrate" in graph["pgqueue_py.client.queue"]  # under TYPE_CHECKING
    assert "pgqueue_py.client" in graph["pgqueue_py"]


def in_part(module: str, part: str) -> bool:
    return module == part or module.startswith(part + ".")


def test_the_client_imports_nothing_of_the_worker_the_cli_or_testing() -> None:
    graph = import_graph(SOURCE_ROOT, PACKAGE)
    later_parts = ["pgqueue_py.worker", "pgqueue_py.cli", "pgqueue_py.testing"]

    reached = {
        (module, target)
        for module, targets in graph.items()
        if in_part(module, "pgqueue_py.client")
        for target in targets
        if any(in_part(target, part) for part in later_parts)
    }

    assert reached == set()


def test_a_cycle_through_a_type_checking_import_is_found_and_printed(tmp_path: Path) -> None:
    pkg = tmp_path / "app"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("from .a import A\n")
    (pkg / "sub" / "a.py").write_text("from app import b\nclass A: ...\n")
    (pkg / "b.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .sub.a import A\n"
    )

    cycle = find_cycle(import_graph(tmp_path, "app"))

    assert cycle == ["app.b", "app.sub.a", "app.b"]
