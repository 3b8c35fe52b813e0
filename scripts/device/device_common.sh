# Shared by scripts/device/gpu_inprocess.sh and gpu_training.sh (sourced, not run): what a lent GPU
# machine (torch and transformers, no project environment, nothing reachable) needs carried.

# here: the project's Python and the CoNLL-2003 folder a bundle copies from
PY=${PYTHON:-.venv/bin/python}
DATA=${LINKNER_CONLL_DIR:-../shared/data/conll2003}

# here: the pydantic wheels (Python 3.12, x86-64) into .whl/
download_pydantic_wheels() {
  local py=$1
  mkdir -p .whl
  "$py" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl \
    $("$py" -m pip list --format=freeze 2>/dev/null | grep -iE '^(pydantic|pydantic_core|annotated-types|typing-inspection)==')
}

# there: install the carried wheels and make them importable
install_carried_wheels() {
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1
  nvidia-smi -L || true
}

# a safetensors file with its floating-point tensors cast: cast_weights PYTHON SRC DST half|float
cast_weights() {
  "$1" - "$2" "$3" "$4" <<'PY'
import sys
from safetensors.torch import load_file, save_file
source, target, kind = sys.argv[1:4]
tensors = load_file(source)
save_file({k: (v.half() if kind == "half" else v.float()) if v.is_floating_point() else v for k, v in tensors.items()},
          target, metadata={"format": "pt"})
PY
}
