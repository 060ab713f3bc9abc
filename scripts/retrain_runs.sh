#!/usr/bin/env bash
# The background queue of whole-run retrains (issue 30, items 4 and 6): `python -m ssl_bench.reference retrain`
# over the five-method table's records first (set=table), then the claims' (set=claims), one record at a time, one
# process, `nice -n 19`, each at its own thread count (the records say train.num_threads=1). Each equal record gets
# retrain.json and the new run's predictions.npz; an unequal one gets retrain.json naming the difference (a finding)
# and its new record stays in the scratch folder.
#
# It trains from a clean git worktree of one commit (a result names the commit it proves; uncommitted changes in the
# working checkout do not leak in), with the working checkout's venv and PYTHONPATH pointing at the worktree, and
# copies each finished record's retrain.json (and predictions.npz) back into the working checkout's
# results/reference/runs/<run_id>/. The scratch folder is outside git.
#
#     bash scripts/retrain_runs.sh            # start or continue (in the background: setsid nohup ... &)
#     tail -f <scratch>/log.txt               # one line per record; <scratch>/<commit>/logs/<run>.log per run
#
# Resumable: stop it any time (kill the process group, a session that ends); running it again reuses the same
# worktree (its commit), skips records already proven equal there, and continues an interrupted run from its
# checkpoint. To prove a newer commit, remove the worktree (git worktree remove <dir>) and start again.
# Settings (environment): RETRAIN_WORKTREE (default <parent of the checkout>/retrain-wt), RETRAIN_SCRATCH (default
# <parent>/retrain-scratch), RETRAIN_COMMIT (the commit of a new worktree, default the checkout's HEAD),
# RETRAIN_SETS (default "table claims").
set -euo pipefail
# `nice` alone does not yield to foreground work under the kernel's autogroups (each session competes as one group):
# started in a session of its own (setsid, as documented), the queue lowers its whole session instead.
if [ "$(ps -o sid= -p $$ | tr -d ' ')" = "$$" ]; then echo 19 > /proc/self/autogroup 2>/dev/null || true; fi
here=$(cd "$(dirname "$0")/.." && pwd)
# The working checkout, also when this script runs from the worktree: the folder holding the shared .git.
main=$(dirname "$(git -C "$here" rev-parse --path-format=absolute --git-common-dir)")
wt=${RETRAIN_WORKTREE:-$(dirname "$main")/retrain-wt}
scratch=${RETRAIN_SCRATCH:-$(dirname "$main")/retrain-scratch}
sets=${RETRAIN_SETS:-table claims}
py=$main/.venv/bin/python
export HF_DATASETS_OFFLINE=1 HF_HUB_OFFLINE=1 PYTHONPATH=$wt
mkdir -p "$scratch"
log=$scratch/log.txt
say() { echo "$(date '+%F %T') $*" >> "$log"; }

exec 9> "$scratch/lock"  # one queue at a time: a second start leaves at once
if ! flock -n 9; then
  say "another retrain queue holds $scratch/lock (pid $(cat "$scratch/pid" 2>/dev/null || echo ?)); not starting a second"
  exit 1
fi
echo $$ > "$scratch/pid"

if [ ! -d "$wt" ]; then
  git -C "$main" worktree add --detach "$wt" "${RETRAIN_COMMIT:-$(git -C "$main" rev-parse HEAD)}" > /dev/null
fi
commit=$(git -C "$wt" rev-parse --short HEAD)
# The package must come from the worktree, not from the checkout the venv's editable install points at.
imported=$(cd "$wt" && "$py" -c "import ssl_bench, methods; print(ssl_bench.__file__, methods.__file__)")
case "$imported" in
  "$wt/ssl_bench/__init__.py $wt/methods/__init__.py") ;;
  *) say "ssl_bench is imported from the wrong place ($imported), not $wt: stopping"; exit 1 ;;
esac
say "queue started (pid $$): worktree $wt at $commit, scratch $scratch, sets: $sets"

proven() {  # retrain.json says equal, clean code, this commit
  local f=$1/retrain.json
  [ -f "$f" ] && grep -q '"equal": true' "$f" && grep -q '"git_clean": true' "$f" && grep -q "\"commit\": \"$commit\"" "$f"
}

copy_back() {  # the worktree's result files of a record -> the working checkout's record folder
  local src=$wt/results/reference/runs/$1 dst=$main/results/reference/runs/$1
  [ -d "$dst" ] || { say "  $1: no such record in $main (not copied)"; return; }
  [ -f "$src/retrain.json" ] && cp "$src/retrain.json" "$dst/retrain.json"
  if proven "$src" && [ -f "$src/predictions.npz" ]; then cp "$src/predictions.npz" "$dst/predictions.npz"; fi
}

for set in $sets; do
  mapfile -t names < <(cd "$wt" && "$py" -m ssl_bench.reference retrain "set=$set" list=true)
  n=${#names[@]}
  say "set=$set: $n records"
  i=0
  for name in "${names[@]}"; do
    i=$((i + 1))
    if proven "$wt/results/reference/runs/$name"; then
      copy_back "$name"
      continue
    fi
    rc=0
    out=$(cd "$wt" && nice -n 19 "$py" -m ssl_bench.reference retrain "runs=['$name']" "scratch=$scratch" \
          2>> "$scratch/errors.txt") || rc=$?
    echo "$out" >> "$scratch/output.txt"
    copy_back "$name"
    line=$(grep -E '^\[1/1\] (equal|differs|not retrained)' <<< "$out" | tail -n 1 || true)
    msg=${line#\[1/1\] }
    case $rc in
      0|1) say "[$set $i/$n] ${msg:-$name: no result (rc $rc; see $scratch/errors.txt)}" ;;
      *) say "[$set $i/$n] $name: stopped (rc $rc; the next start continues it from its checkpoint)"; exit "$rc" ;;
    esac
  done
done
say "queue finished: every record of $sets has a retrain.json at $commit"
