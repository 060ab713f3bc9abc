#!/usr/bin/env bash
# The main job: SwAV on the embedded Fashion-MNIST at the demo budget (minutes on 2 CPU cores; the run prints its progress).
# Extra key=value arguments are passed on, e.g. scripts/demo.sh method=simclr seed=1
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/accelerate launch --cpu --num_machines 1 --num_processes 1 --mixed_precision no --dynamo_backend no \
  --num_cpu_threads_per_process "$(nproc)" \
  -m ssl_bench.run method=swav dataset=fashion_mnist budget=demo "$@"
