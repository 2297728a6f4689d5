"""Code hashes that make records and cached artifacts stale-proof.

A plugin's hash covers the source of its module and of every module it imports from the project, transitively
(found by parsing ``import`` statements, not by running anything). Library modules (the standard library and
installed packages other than the plugin's own) are represented by the versions of the libraries that change
numbers (:data:`NUMERIC_LIBRARIES`) instead of their source. Package ``__init__`` files count only when a module
imports the package itself, so editing one attack does not change the hash of another.

A closure can be cut at **opaque** modules (``opaque=``; ``pkg.*`` names a whole package): they and what only they import are left out. The core hash
cuts at the modules whose output is hashed as data (the dataset loaders: content and split hashes are part of every
config hash) and at the run machinery that moves numbers but never changes them (the YAML loader, records, the
artifact cache, process isolation, plugin loading, provenance, this module).
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import inspect
import sys
import sysconfig
from functools import lru_cache
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Iterable

#: Libraries whose version can change a number in a record; part of every cell key and artifact key.
NUMERIC_LIBRARIES = ("torch", "torchvision", "numpy", "scipy", "scikit-learn", "scikit-image",
                     "opencv-python-headless", "opacus", "constriction", "captum", "piq", "lpips", "diffusers",
                     "pillow", "mlxtend")


def library_versions(names: Iterable[str] = NUMERIC_LIBRARIES) -> dict[str, str]:
    out = {}
    for name in names:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    return out


def _library_roots() -> tuple[Path, ...]:
    paths = sysconfig.get_paths()
    roots = {Path(paths[k]).resolve() for k in ("stdlib", "platstdlib", "purelib", "platlib") if k in paths}
    return tuple(sorted(roots))


def _is_library(path: Path, own_root: Path) -> bool:
    """A file under an interpreter/site-packages root that is not inside the plugin's own package."""
    if path.is_relative_to(own_root):
        return False
    return any(path.is_relative_to(r) for r in _library_roots())


def _module_file(name: str) -> Path | None:
    mod = sys.modules.get(name)
    file = getattr(mod, "__file__", None) if mod is not None else None
    if file is None:
        try:
            spec = importlib.util.find_spec(name)
        except (ImportError, ValueError, AttributeError):
            return None
        file = spec.origin if spec is not None and spec.has_location else None
    if file is None or not str(file).endswith(".py"):
        return None
    return Path(file).resolve()


def _package_of(name: str, path: Path) -> str:
    return name if path.name == "__init__.py" else name.rpartition(".")[0]


@lru_cache(maxsize=None)
def _top_is_library(top: str, own_root: Path) -> bool:
    """Whether top-level module ``top`` lives in the interpreter or site-packages (found without importing it).
    The core package itself is never a library, however privbench is installed."""
    if top == __name__.split(".")[0]:
        return False
    if top in sys.builtin_module_names:
        return True
    mod = sys.modules.get(top)
    file = getattr(mod, "__file__", None) if mod is not None else None
    if file is None:
        try:
            spec = importlib.util.find_spec(top)
        except (ImportError, ValueError):
            return True
        if spec is None or not spec.has_location or spec.origin is None:
            return True
        file = spec.origin
    return _is_library(Path(file).resolve(), own_root)


def _imports(name: str, path: Path, own_root: Path) -> set[str]:
    """Absolute names of the project modules imported by module ``name`` at ``path`` (submodules resolved where
    they exist; library imports dropped before anything is imported to resolve them)."""
    tree = ast.parse(path.read_bytes(), filename=str(path))
    package = _package_of(name, path)
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1])
                base = f"{base}.{node.module}" if node.module else base
            else:
                base = node.module or ""
            if not base or _top_is_library(base.split(".")[0], own_root):
                continue
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                found.add(sub if _module_file(sub) is not None else base)
    return {m for m in found if m and not _top_is_library(m.split(".")[0], own_root)}


def _is_opaque(name: str, opaque: tuple[str, ...]) -> bool:
    """``name`` is listed, or lies in a listed package written ``pkg.*`` (which also covers ``pkg`` itself)."""
    return any(name == o or (o.endswith(".*") and (name == o[:-2] or name.startswith(o[:-1]))) for o in opaque)


@lru_cache(maxsize=None)
def _closure_files(root: str, opaque: tuple[str, ...] = ()) -> tuple[tuple[str, Path], ...]:
    first = _module_file(root)
    if first is None:
        raise ValueError(f"cannot hash module {root!r}: no Python source file")
    own_root = first.parent if "." in root or first.name == "__init__.py" else first
    seen: dict[str, Path] = {}
    todo = [root]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        path = _module_file(name)
        if path is None or (name != root and (_top_is_library(name.split(".")[0], own_root)
                                              or _is_opaque(name, opaque))):
            continue
        seen[name] = path
        todo.extend(sorted(_imports(name, path, own_root) - set(seen)))
    return tuple(sorted(seen.items()))


def module_closure(root: str, opaque: Iterable[str] = ()) -> list[str]:
    """Names of the project modules whose source determines module ``root`` (itself included), the closure cut at
    the ``opaque`` modules and packages."""
    return [n for n, _ in _closure_files(root, tuple(sorted(opaque)))]


def closure_hash(*modules: str, opaque: Iterable[str] = ()) -> str:
    """SHA-256 over the sources of the import closures of ``modules`` (file contents keyed by module name), cut at
    the ``opaque`` modules and packages."""
    h = hashlib.sha256()
    files: dict[str, Path] = {}
    cut = tuple(sorted(opaque))
    for m in modules:
        files.update(_closure_files(m, cut))
    for name, path in sorted(files.items()):
        h.update(name.encode() + b"\0" + hashlib.sha256(path.read_bytes()).digest())
    return h.hexdigest()


def plugin_hash(obj: object) -> str:
    """Hash of the module defining ``obj`` (a plugin class or function) and everything it imports from the project."""
    module = inspect.getmodule(obj)
    if module is None:
        raise ValueError(f"cannot find the module of {obj!r}")
    return closure_hash(module.__name__)


def clear_cache() -> None:
    """Forget memoised closures (tests that edit sources in place)."""
    _closure_files.cache_clear()
