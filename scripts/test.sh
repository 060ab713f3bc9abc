#!/usr/bin/env bash
# The test suite (CPU, offline): installs what it needs, then lint and pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_DATASETS_OFFLINE=1 HF_HUB_OFFLINE=1
.venv/bin/ruff check .
.venv/bin/python -m pytest -p no:cacheprovider "$@"  # addopts has -q: dots + the "N passed" line
