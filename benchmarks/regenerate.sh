#!/usr/bin/env bash
# Regenerate leaderboard boards at one clean commit (issue 29), resumably, without freezing the main checkout:
#   benchmarks/regenerate.sh COMMIT BOARD [BOARD ...]
# clones COMMIT into /work/regen (its own venv on top of the installed dependencies, so records carry COMMIT
# whatever the main checkout does), seeds each board's output with the records already committed in
# leaderboards/BOARD (a killed or interrupted run resumes from them), runs the board's suite with --jobs 2 and
# copies records, units and samples back into leaderboards/BOARD. Then, in the main checkout:
#   privbench report leaderboards/BOARD --force && privbench report leaderboards/BOARD --check
set -euo pipefail
commit=$1; shift
main=$(cd "$(dirname "$0")/.." && pwd)
regen=${REGEN_DIR:-/work/regen}
venv=${REGEN_VENV:-/work/venv-regen}
if [ ! -d "$regen/.git" ]; then git clone --quiet "$main" "$regen"; fi
git -C "$regen" fetch --quiet "$main" "$commit" && git -C "$regen" checkout --quiet --detach "$commit"
[ -x "$venv/bin/python" ] || python -m venv --system-site-packages "$venv"
"$venv/bin/pip" install --quiet --no-deps -e "$regen"
for board in "$@"; do
  out="$regen/out/$board"
  mkdir -p "$out"
  # resume only from records made at COMMIT (the board's old records, of other code and configs, are left behind)
  "$venv/bin/python" - "$main/leaderboards/$board" "$out" "$commit" <<'PY'
import json, shutil, sys
from pathlib import Path
src, dst, commit = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
for rec in sorted((src / "records").glob("*.json")):
    if not json.loads(rec.read_text())["provenance"]["git_commit"].startswith(commit[:12]):
        continue
    for part in ("records", "units", "samples"):
        for f in (src / part).glob(rec.stem + "*"):
            (dst / part).mkdir(parents=True, exist_ok=True)
            shutil.copy2(f, dst / part / f.name)
PY
  seeds=$("$venv/bin/python" -c "from privbench.run import plugins; plugins.load_builtins()
from privbench.run.config import load_suite; print(*load_suite('$board').seeds)")
  for seed in $seeds; do  # seed by seed, copying back after each, so an interrupted session loses one seed at most
    (cd "$regen" && "$venv/bin/python" -m privbench run --suite "$board" --out "$out" --jobs 2 --seeds "$seed")
    # the board becomes this run's records alone (the first time, its old records are removed)
    for part in records units samples; do
      rm -rf "$main/leaderboards/$board/$part"
      if [ -d "$out/$part" ]; then cp -r "$out/$part" "$main/leaderboards/$board/$part"; fi
    done
  done
done
