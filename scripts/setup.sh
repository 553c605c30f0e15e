#!/usr/bin/env bash
# Create .venv (if missing) and install the pinned dependencies and both packages into it.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
. .venv/bin/activate
python -m pip install --quiet --upgrade pip
# torch and torchvision are pinned in the same call (constraints.txt) so no later install swaps them.
python -m pip install --quiet -c constraints.txt -e ".[dev,slurm]"
