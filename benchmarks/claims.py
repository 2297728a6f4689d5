"""Print the paper-claim verdicts (C1, C3, C4, C5) computed from one or more records directories, with the CI of
each claimed difference (the same table each board's report shows; the logic lives in
``privbench.report.claims``).

Usage: python benchmarks/claims.py leaderboards/quick [leaderboards/split ...]
"""

from __future__ import annotations

import sys
from pathlib import Path

from privbench.report.frame import load_frame
from privbench.report.render import to_markdown
from privbench.report.tables import claims_table


def main(dirs: list[str]) -> int:
    if not dirs:
        print(__doc__.strip().splitlines()[-1], file=sys.stderr)
        return 2
    for d in dirs:
        df = load_frame(Path(d))
        table = claims_table(df[df.status == "ok"])
        print(f"## {d}\n")
        print(to_markdown(table) if table is not None else "(no claim this suite can test)\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
