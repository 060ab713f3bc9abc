#!/usr/bin/env bash
# Trains the runs the shipped tables and claims still need (`python -m ssl_bench.reference pending`: missing,
# interrupted and stale records, pilot seeds first), WORKERS at a time (default 2) with one thread each. Stop it any
# time (Ctrl-C, or a session that ends): each run checkpoints every epoch and the next start resumes it. When the list
# is done it asks again, since a finished pilot can ask for more seeds (seeds=auto); it ends when nothing is pending.
# In the background: setsid nohup bash scripts/reference_runs.sh > pending.log 2>&1 &
# Then: python -m ssl_bench.reference verify sample=ci && python -m ssl_bench.reference
set -euo pipefail
# `nice` alone does not yield to foreground work under the kernel's autogroups (each session competes as one group):
# started in a session of its own (setsid, as documented), the queue lowers its whole session instead.
if [ "$(ps -o sid= -p $$ | tr -d ' ')" = "$$" ]; then echo 19 > /proc/self/autogroup 2>/dev/null || true; fi
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_DATASETS_OFFLINE=1 HF_HUB_OFFLINE=1
workers=${WORKERS:-2}
dir=$(mktemp -d)
trap 'kill 0 2>/dev/null; rm -rf "$dir"' EXIT

worker() {  # takes the next line under a lock until the list is empty
  local line
  while line=$(flock "$dir/lock" bash -c "l=\$(head -n1 '$dir/todo'); [ -n \"\$l\" ] && sed -i 1d '$dir/todo'; echo \"\$l\""); \
        [ -n "$line" ]; do
    echo "[worker $1] $(date +%T) ${line}"
    # shellcheck disable=SC2086  # the line is a list of key=value overrides
    .venv/bin/python -m ssl_bench.run ${line%%#*} output_dir=results/reference/runs train.num_threads=1 \
      train.progress=false resume=true > "$dir/worker$1.log" 2>&1 || echo "[worker $1] failed: ${line} (log: $dir/worker$1.log)"
  done
}

while true; do
  .venv/bin/python -m ssl_bench.reference pending > "$dir/todo"
  n=$(grep -c . "$dir/todo" || true)
  echo "$(date +%T) pending runs: $n"
  [ "$n" -eq 0 ] && break
  before=$(md5sum < "$dir/todo")
  for i in $(seq 1 "$workers"); do worker "$i" & done
  wait
  .venv/bin/python -m ssl_bench.reference pending > "$dir/after"
  [ "$(md5sum < "$dir/after")" = "$before" ] && { echo "nothing changed in a pass: see the workers' logs"; break; }
done
