"""Where the installed project lives: the core package's folder and the plugin packages' folders, found from the
import system (not from this file's depth), so a regular install and an editable one give the same answers."""

from __future__ import annotations

import importlib.util
from pathlib import Path

#: The import names of the project's own packages (one top-level namespace, ``privbench``).
PACKAGES = ("privbench", "privbench.defenses", "privbench.attacks")


def package_dir(name: str = "privbench") -> Path:
    """The folder of package ``name`` (``privbench`` is the ``benchmark/`` folder of a checkout)."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(f"package {name!r} is not installed")
    return Path(next(iter(spec.submodule_search_locations))).resolve()


def package_dirs() -> tuple[Path, ...]:
    """The folders of :data:`PACKAGES`: what a sandbox child may read of the project."""
    return tuple(package_dir(n) for n in PACKAGES)


def checkout_root() -> Path:
    """The folder holding the core package: a git checkout's root for an editable install."""
    return package_dir().parent
