"""The house's architecture (docs/DESIGN.md, layout): wings with a one-way import order, no import circle, no module
over 450 lines, and one top-level import name. Imports are read from the source (``ast``), lazy ones inside
functions included; only ``if TYPE_CHECKING:`` blocks (annotations) are left out."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

from privbench.core.paths import package_dir

#: Rank of each wing: a module may import its own wing and wings of a lower rank, never a higher or an equal one.
RANKS = {"core": 0, "ops": 1, "data": 1, "models": 1, "metrics": 1, "report": 1,
         "audit": 2, "defenses": 2, "attacks": 2, "api": 3, "run": 3, "submit": 4, "cli": 5, "__main__": 6}
MAX_LINES = 450
#: "No function above ~60 lines" (issue 27), counted from ``def`` to its last line, docstring included.
MAX_FUNCTION_LINES = 70


def _modules() -> dict[str, Path]:
    out = {}
    for pkg in ("privbench", "privbench.defenses", "privbench.attacks"):
        root = package_dir(pkg)
        for p in root.rglob("*.py"):
            rel = list(p.relative_to(root).with_suffix("").parts)
            if pkg == "privbench" and rel[0] in ("defenses", "attacks"):
                continue
            if rel[-1] == "__init__":
                rel = rel[:-1]
            out[".".join([pkg, *rel])] = p
    return out


MODULES = _modules()


def _type_checking(node: ast.If) -> bool:
    t = node.test
    return (isinstance(t, ast.Name) and t.id == "TYPE_CHECKING") or \
        (isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING")


def _imports(name: str, path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    skip = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If) and _type_checking(node)
            for b in node.body for n in ast.walk(b)}
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([node.module] if node.module else []))
            for a in node.names:
                sub = f"{base}.{a.name}"
                found.add(sub if sub in MODULES else base)
    return {m for m in found if m in MODULES and m != name}


GRAPH = {name: _imports(name, path) for name, path in MODULES.items()}


def _wing(name: str) -> str | None:
    parts = name.split(".")
    return parts[1] if len(parts) > 1 else None


def test_every_module_has_a_wing() -> None:
    assert sorted(n for n in MODULES if n != "privbench" and _wing(n) not in RANKS) == []


def test_imports_run_one_way() -> None:
    upward = sorted(f"{a} -> {b}" for a, targets in GRAPH.items() for b in targets
                    if _wing(a) != _wing(b) and _wing(b) is not None and _wing(a) is not None
                    and RANKS[_wing(b)] >= RANKS[_wing(a)])
    assert upward == []


def test_no_import_circle() -> None:
    colour: dict[str, int] = {}
    cycles = []

    def visit(n: str, stack: list[str]) -> None:
        colour[n] = 1
        for m in sorted(GRAPH[n]):
            if colour.get(m) == 1:
                cycles.append(" -> ".join(stack[stack.index(m):] + [m]))
            elif m not in colour:
                visit(m, stack + [m])
        colour[n] = 2

    for n in sorted(GRAPH):
        if n not in colour:
            visit(n, [n])
    assert cycles == []


def test_no_module_over_450_lines() -> None:
    """Every module of the project (benchmark/, defenses/, attacks/) is at most MAX_LINES long."""
    size = {n: len(p.read_text().splitlines()) for n, p in MODULES.items()}
    assert sorted(f"{n}: {k}" for n, k in size.items() if k > MAX_LINES) == []


def test_no_function_over_70_lines() -> None:
    import ast

    long = []
    for n, p in MODULES.items():
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                size = node.end_lineno - node.lineno + 1
                if size > MAX_FUNCTION_LINES:
                    long.append(f"{n}.{node.name}: {size}")
    assert sorted(long) == []


def test_one_top_level_import_name() -> None:
    """Only ``privbench`` is importable from the installed project: not ``benchmark``, ``defenses`` or ``attacks``
    (a ``benchmark`` package exists on PyPI). Checked in a fresh interpreter outside the checkout."""
    import subprocess

    code = ("import importlib.util, json; print(json.dumps({n: importlib.util.find_spec(n) is not None "
            "for n in ('privbench', 'privbench.defenses', 'privbench.attacks', 'benchmark', 'defenses', 'attacks')}))")
    out = subprocess.run([sys.executable, "-I", "-c", code], capture_output=True, text=True, check=True, cwd="/")
    import json

    assert json.loads(out.stdout) == {"privbench": True, "privbench.defenses": True, "privbench.attacks": True,
                                      "benchmark": False, "defenses": False, "attacks": False}


def test_the_queue_managers_start_up_does_not_import_torch() -> None:
    """The run's queue manager is a spawned process that unpickles only ``exit_with_parent``: importing torch
    there cost 290 MB of private memory per run (docs/BENCHMARKS.md, video memory)."""
    import subprocess

    code = "import sys, privbench.run.startup; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
