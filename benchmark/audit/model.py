"""The released model of a membership audit: a state dict loaded with ``torch.load(weights_only=True)`` into a
registered task model (``privbench.models``), and its per-image membership scores (Yeom et al., CSF 2018: the loss;
Salem et al., NDSS 2019: the top confidence)."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Optional

import numpy as np

from privbench.audit.loader import Folder
from privbench.core.errors import InputError


def read_labels(path: Path) -> dict[str, int]:
    """``file,label`` rows (a header row is allowed): relative file name -> integer class."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"--labels {path}: no such file")
    out: dict[str, int] = {}
    with open(path, newline="") as f:
        for i, row in enumerate(csv.reader(f)):
            if not row or (i == 0 and row[0].strip().lower() == "file"):
                continue
            if len(row) != 2:
                raise InputError(f"--labels {path}, line {i + 1}: expected 'file,label', got {row!r}")
            try:
                out[row[0].strip()] = int(row[1])
            except ValueError:
                raise InputError(f"--labels {path}, line {i + 1}: label {row[1]!r} is not an integer") from None
    if not out:
        raise InputError(f"--labels {path}: no rows")
    return out


def load_model(path: Path, arch: str, width: Optional[int]) -> "torch.nn.Module":  # noqa: F821
    """Build ``arch`` with the input channels and classes the state dict implies, and load it (strictly)."""
    import torch

    from privbench.models import build_model

    path = Path(path)
    if not path.is_file():
        raise InputError(f"--model {path}: no such file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - anything but a plain state dict is refused
        raise InputError(f"--model {path}: not a weights-only torch checkpoint ({type(e).__name__}: {e})") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise InputError(f"--model {path}: expected a state dict of tensors")
    convs = [v for v in state.values() if v.ndim == 4]
    linears = [v for v in state.values() if v.ndim == 2]
    if not convs or not linears:
        raise InputError(f"--model {path}: cannot infer input channels and classes (no conv or linear weights)")
    kwargs = {} if width is None else {"width": width}
    try:
        model = build_model(arch, int(convs[0].shape[1]), int(linears[-1].shape[0]), **kwargs)
        model.load_state_dict(state, strict=True)
    except InputError:
        raise
    except Exception as e:  # noqa: BLE001 - a mismatch between checkpoint and architecture
        raise InputError(f"--model {path}: does not fit --model-arch {arch}"
                         f"{'' if width is None else f' --model-width {width}'} ({type(e).__name__}: "
                         f"{str(e).splitlines()[0][:200]})") from None
    return model.eval()


def scores(model: "torch.nn.Module", folder: Folder, labels: dict[str, int], size: int  # noqa: F821
           ) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Membership scores of the images of ``folder`` that have a label: ``-loss`` and top confidence. Returns
    ``({name: scores}, index of the scored images)``."""
    import torch
    from torch.nn import functional as F

    idx = np.array([i for i, n in enumerate(folder.names) if n in labels], dtype=int)
    if not len(idx):
        raise InputError(f"--labels names none of the files in {folder.root}")
    y = torch.tensor([labels[folder.names[i]] for i in idx])
    x = torch.from_numpy(folder.images[idx]).permute(0, 3, 1, 2).float() / 255.0
    channels = next(p for p in model.parameters() if p.ndim == 4).shape[1]
    if channels == 1:
        x = (x * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, keepdim=True)
    x = F.interpolate(x, size=(size, size), mode="area")
    with torch.no_grad():
        logits = torch.cat([model(x[i:i + 256]) for i in range(0, len(x), 256)])
    if int(y.max()) >= logits.shape[1] or int(y.min()) < 0:
        raise InputError(f"--labels: classes must lie in [0, {logits.shape[1]}) for this model")
    loss = F.cross_entropy(logits, y, reduction="none")
    conf = logits.softmax(1).max(1).values
    return {"loss": (-loss).numpy(), "confidence": conf.numpy()}, idx
