#!/usr/bin/env bash
# The main command: set up .venv, then run the whole pipeline on the demo default.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
. .venv/bin/activate
export HF_HUB_OFFLINE=1
snakemake --cores 8 all "$@"
