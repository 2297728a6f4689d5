"""Atomic file writes: the one implementation every record, table, cache entry, artifact and generated module uses.

A reader (a resumed run, a concurrent worker, ``report --check``) sees either the old file or the whole new one,
never a torn write: the content goes to a temporary file in the same directory, is flushed to disk, made readable
(0644, ``mkstemp`` creates 0600) and renamed over the target; on any failure the temporary file is removed.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Iterator


@contextlib.contextmanager
def atomic_path(path: Path | str, suffix: str = ".tmp") -> Iterator[Path]:
    """Yield a temporary path beside ``path`` to write (by any library: ``np.savez``, ``torch.save``, ...); when the
    block ends normally it is fsynced and renamed onto ``path``. ``suffix`` keeps an extension a writer insists on
    (``np.savez`` appends ``.npz`` to a name without it)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    os.close(fd)
    try:
        yield Path(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def atomic_write_text(path: Path | str, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
