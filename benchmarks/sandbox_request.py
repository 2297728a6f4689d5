"""What one sandboxed request costs (issue 23: every request runs in a fresh, newly confined child).

    python benchmarks/sandbox_request.py [--repeats 5] [--images 1000]

Interleaved in one run, medians of ``--repeats``:

- **A, a sandboxed transform**: start a confined child (``privbench.submit.confine``: namespaces, limits, capabilities,
  Landlock, seccomp; then the child imports torch, the built-in defenses and the submission), send it one
  ``transform`` request of ``--images`` mnist-sized images, read the reply, close it: what an attack's query or the
  reproduction check costs a submission run;
- **B, the bare reference**: ``python -I -c "import torch"`` in a subprocess plus the same transform in-process.

The ratio A ÷ B is the overhead of the sandbox over the interpreter start that any process-isolated request pays.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SUBMISSION = '''
import torch
from privbench.core.registry import DEFENSES
from privbench.defenses.base import InputDefense


@DEFENSES.register("bench-blend")
class BenchBlend(InputDefense):
    def apply(self, images, generator):
        return 0.5 * images + 0.5 * torch.rand(images.shape, generator=generator)
'''


def main() -> None:
    from privbench.submit.protocol import Limits
    from privbench.submit.session import Session
    from privbench.submit.view import filesystem_isolation

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--images", type=int, default=1000)
    args = ap.parse_args()
    if filesystem_isolation() is not None:
        sys.exit(f"cannot confine here: {filesystem_isolation()}")
    src = Path(tempfile.mkdtemp(prefix="privbench-bench-")) / "bench_blend.py"
    src.write_text(SUBMISSION)
    x = torch.rand(args.images, 1, 28, 28)
    state = torch.Generator().manual_seed(0).get_state()

    def sandboxed() -> None:
        s = Session(src, Limits(wall_seconds=120))
        try:
            s.request("transform", {"id": "bench-blend", "params": {}}, {"images": x, "generator_state": state},
                      64 << 20)
        finally:
            s.close()

    def bare() -> None:
        subprocess.run([sys.executable, "-I", "-c", "import torch"], check=True)
        g = torch.Generator().manual_seed(0)
        _ = 0.5 * x + 0.5 * torch.rand(x.shape, generator=g)

    a_times, b_times = [], []
    sandboxed(), bare()  # warm-up: file cache
    for _ in range(args.repeats):
        for fn, times in ((sandboxed, a_times), (bare, b_times)):
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
    a, b = statistics.median(a_times), statistics.median(b_times)
    print(f"sandboxed transform of {args.images} images (fresh confined child): {a:.2f} s")
    print(f"bare reference (python -I -c 'import torch' + the same transform): {b:.2f} s")
    print(f"ratio: {a / b:.2f}")


if __name__ == "__main__":
    main()
