#!/usr/bin/env bash
# Run the test suite in a virtual environment built by scripts/setup_env.sh.
#   bash scripts/test.sh [pytest args...]       (VENV=.venv by default)
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VENV:-.venv}"
if [ ! -x "$VENV/bin/python" ]; then
  bash scripts/setup_env.sh 5 "$VENV"
fi
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
exec "$VENV/bin/python" -m pytest -q -p no:cacheprovider "$@"
