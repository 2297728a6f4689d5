"""Provenance stamped on every record: versions, commit, machine (CPU, threads, torch build) and determinism."""

from __future__ import annotations

import os
import platform
import re
import subprocess
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from privbench import __version__
from privbench.core.codehash import library_versions
from privbench.core.paths import checkout_root

#: Paths whose uncommitted edits make a run "dirty" (they change numbers); records and docs do not.
CODE_PATHS = ("benchmark", "defenses", "attacks", "pyproject.toml")


def _git(root: Path, *args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout if out.returncode == 0 else None


def git_commit() -> str:
    """``<sha>`` of the checkout holding this package, ``+dirty`` if its code (:data:`CODE_PATHS`) has uncommitted
    or untracked changes, else ``unknown`` outside a git checkout."""
    root = checkout_root()
    sha = _git(root, "rev-parse", "HEAD")
    if sha is None:
        return "unknown"
    status = _git(root, "status", "--porcelain", "--", *CODE_PATHS)
    dirty = any(line and not line.endswith(".pyc") for line in (status or "").splitlines())
    return sha.strip() + ("+dirty" if dirty or status is None else "")


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def torch_build() -> dict[str, Any]:
    """What of the torch build changes floating-point results: SIMD level, BLAS/LAPACK, oneDNN, OpenMP, CUDA."""
    import torch

    show = torch.__config__.show()

    def find(pattern: str) -> str | None:
        m = re.search(pattern, show)
        return m.group(1).strip() if m else None

    return {
        "torch": torch.__version__,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "blas": find(r"BLAS_INFO=([^,\n]+)"),
        "lapack": find(r"LAPACK_INFO=([^,\n]+)"),
        "mkl": find(r"Intel\(R\) oneAPI Math Kernel Library Version ([^\n]+)") or find(r"USE_MKL=(\w+)"),
        "onednn": find(r"(?:MKL-DNN|oneDNN) v([\d.]+)") or find(r"USE_MKLDNN=(\w+)"),
        "openmp": find(r"OpenMP (\d+)"),
        "cuda_build": torch.version.cuda,
    }


def machine(device: str) -> dict[str, Any]:
    """The machine and torch state a cell ran with."""
    import torch

    from privbench.core.seeding import deterministic_settings

    return {
        "cpu": cpu_model(),
        "logical_cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "build": torch_build(),
        "deterministic": deterministic_settings(),
        "device": device,
        "device_name": torch.cuda.get_device_name(torch.device(device)) if device.startswith("cuda") else None,
    }


def provenance(*, config_hash: str, cell_key: str, code: dict[str, str], device: str, commit: str,
               machine_info: dict[str, Any]) -> dict[str, object]:
    return {
        "privbench_version": __version__,
        "git_commit": commit,
        "config_hash": config_hash,
        "cell_key": cell_key,
        "code": code,
        "libraries": library_versions(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "device": device,
        "machine": machine_info,
        "timestamp": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
