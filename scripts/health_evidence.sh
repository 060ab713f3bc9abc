#!/usr/bin/env bash
# Issue 23's evidence for the guardrails, at the demo budget (CPU hours: ~5 min per run on 2 free cores, 17 runs):
# two failing runs that must trip a guardrail (CARL without its KL term; SwAV with the queue from epoch 0, unfrozen
# prototypes and a 10x lr) and the five healthy methods x 3 seeds, which must trip none. Runs go to results/health/
# (never the shipped results/reference/); each checkpoints every epoch, so running the script again resumes.
# Then it prints, per run, the guardrails that fired, and draws the figures (results/health/figures/health_demo.png).
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_DATASETS_OFFLINE=1 HF_HUB_OFFLINE=1
py=.venv/bin/python
out=results/health
run() { $py -m ssl_bench.run dataset=fashion_mnist budget=demo output_dir=$out/runs train.progress=false resume=true "$@"; }
run method=carl method.lambda_start=0 method.lambda_end=0 method.lambda_epochs=0 seed=0
run method=swav method.queue_start_epoch=0 method.queue_length=512 method.freeze_prototypes_iters=0 optim.lr=0.01 seed=0
$py -m ssl_bench.compare methods=[swav,simclr,deepclusterv2,selav2,carl] dataset=fashion_mnist budget=demo \
  seeds=[0,1,2] results=$out train.progress=false
$py - "$out/runs" <<'PY'
import json, sys
from pathlib import Path
for s in sorted(Path(sys.argv[1]).glob("*/summary.json")):
    fired = json.loads(s.read_text()).get("guardrails", [])
    print(f"{s.parent.name}: " + ("; ".join(f"epoch {g['epoch'] + 1} {g['check']}" for g in fired) or "none"))
PY
$py -m ssl_bench.plot results=$out
