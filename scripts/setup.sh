#!/usr/bin/env bash
# Installs what ssl_bench needs on a fresh Debian machine: the embedded Fashion-MNIST (Debian package,
# when run as root), a virtual environment in .venv and the project with its dev extras. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -e /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist >/dev/null
  else
    echo "note: Fashion-MNIST is missing; run 'sudo apt-get install dataset-fashion-mnist'" >&2
  fi
fi
# A PostgreSQL server for the multi-worker sweep tests (tests/test_sweep_workers.py start a throwaway cluster).
if ! compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
  else
    echo "note: PostgreSQL is missing (its sweep tests are skipped); run 'sudo apt-get install postgresql'" >&2
  fi
fi
[ -x .venv/bin/python ] || python3 -m venv .venv
stamp=".venv/.ssl_bench-$(sha256sum pyproject.toml | cut -c1-16)"
if [ ! -e "$stamp" ]; then
  .venv/bin/pip install -q --disable-pip-version-check -e '.[dev]'
  touch "$stamp"
fi
