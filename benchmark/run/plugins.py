"""Plugin loading: the built-in registries' modules, the installed plugin packages (entry points) and plugin files
given on the command line, imported so that their decorators fill :mod:`privbench.core.registry`.

Every plugin package, built-in or third-party, registers through the entry-point groups ``privbench.defenses`` /
``privbench.attacks`` (the built-ins are declared in ``pyproject.toml``) or a Python file given on the CLI
(``--plugin FILE``). The core never imports a plugin package by name.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import re
import sys
from importlib.metadata import entry_points
from pathlib import Path

from privbench.core.errors import InputError

#: Entry-point groups through which plugin packages register (built-ins included).
PLUGIN_GROUPS = ("privbench.defenses", "privbench.attacks")
#: The core's own modules that fill registries (datasets, metrics, task models).
BUILTIN_MODULES = ("privbench.data", "privbench.metrics", "privbench.models")


def plugin_modules() -> list[str]:
    """Module names of the installed plugin packages (entry points of :data:`PLUGIN_GROUPS`)."""
    return sorted({ep.module for group in PLUGIN_GROUPS for ep in entry_points(group=group)})


def load_builtins() -> None:
    """Import the core's own registries and every installed plugin package (idempotent)."""
    for name in BUILTIN_MODULES:
        importlib.import_module(name)
    for group in PLUGIN_GROUPS:
        for ep in entry_points(group=group):
            try:
                ep.load()
            except (ImportError, KeyError, ValueError) as e:
                raise InputError(f"plugin entry point {ep.name} = {ep.value} (group {group}) failed to load: "
                                 f"{type(e).__name__}: {e}") from None


def plugin_module_name(path: Path) -> str:
    """The stable module name a plugin file is imported under (so code hashes and pickling can find it)."""
    resolved = Path(path).resolve()
    return f"privbench_plugin_{re.sub(r'[^0-9a-zA-Z_]', '_', resolved.stem)}_" \
           f"{hashlib.sha256(str(resolved).encode()).hexdigest()[:8]}"


def load_plugin_file(path: str | Path) -> str:
    """Import a Python file whose decorators register extra plugins; returns its module name (idempotent)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"plugin file {path} does not exist")
    name = plugin_module_name(path)
    if name in sys.modules:
        return name
    spec = importlib.util.spec_from_file_location(name, path.resolve())
    if spec is None or spec.loader is None:
        raise InputError(f"plugin file {path}: not a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # registered before executing, so classes defined in it can be found by name
    try:
        spec.loader.exec_module(module)
    except InputError:
        del sys.modules[name]
        raise
    except Exception as e:
        del sys.modules[name]
        raise InputError(f"plugin file {path} failed to import: {type(e).__name__}: {e}") from None
    return name


def load_plugins(files: tuple[str, ...] = ()) -> None:
    """Built-ins, entry points, then ``files`` (``--plugin``): what every process of a run loads."""
    load_builtins()
    for f in files:
        load_plugin_file(f)
