#!/usr/bin/env bash
# The test command: set up .venv, then lint and run the whole test suite offline.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
. .venv/bin/activate
export HF_HUB_OFFLINE=1 OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
ruff check .
snakefmt --check Snakefile workflow/
# Two workers; each test file stays on one worker (the end-to-end file shares one finished run).
python -m pytest -q -n 2 --dist loadfile "$@"
