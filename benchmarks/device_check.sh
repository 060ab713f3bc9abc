#!/usr/bin/env bash
# The prepared GPU check of issue 15 (benchmarks/device_check.py says what it measures): one GPU, under 8 minutes,
# device_check.md and device_check.json under $OUT when set, else results/device_check/.
#
#   bash benchmarks/device_check.sh            # on a machine with one GPU
#   bash benchmarks/device_check.sh --cpu      # the same steps, tiny, on the CPU (tests/test_device_check.py)
#
# Python: $PYTHON, else the checkout's .venv, else python3. A machine whose python3 has torch but not the rest
# (lightly, hydra-core, omegaconf, antlr4-python3-runtime) takes them as wheels in .whl/ (pip download them here
# for its Python version; see the device README): they are installed to /tmp/site first.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -n "${PYTHON:-}" ]; then
    py="$PYTHON"
elif [ -x .venv/bin/python ]; then
    py=.venv/bin/python
else
    py=python3
fi
if [ -d .whl ] && ! "$py" -c "import lightly, hydra, omegaconf" 2>/dev/null; then
    "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
fi
export HF_DATASETS_OFFLINE=1 HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
exec "$py" -m benchmarks.device_check "$@"
