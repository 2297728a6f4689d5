"""Provenance stamped on every record: versions, commit, platform, device."""

from __future__ import annotations

import platform
import subprocess
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from . import __version__

_LIBRARIES = ("torch", "torchvision", "numpy", "piq", "lpips", "scikit-learn", "scikit-image", "opencv-python-headless",
              "pandas", "opacus", "mlxtend", "constriction")


def git_commit() -> str:
    """``<sha>`` of the checkout holding this package, ``+dirty`` if it has uncommitted changes, else ``unknown``."""
    root = Path(__file__).resolve().parent.parent
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10)
        if sha.returncode != 0:
            return "unknown"
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=10)
        return sha.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def library_versions() -> dict[str, str]:
    out = {}
    for name in _LIBRARIES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    return out


def provenance(config_hash: str, device: str, commit: str) -> dict[str, object]:
    return {
        "privbench_version": __version__,
        "git_commit": commit,
        "config_hash": config_hash,
        "libraries": library_versions(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "device": device,
        "timestamp": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
