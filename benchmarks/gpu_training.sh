#!/usr/bin/env bash
# benchmarks/robust_training.py on a GPU machine that has torch and transformers but not this
# project's environment (the `device` tool's machines), within what such a call carries (64 MiB)
# and brings back (8 files of at most 16 MiB).
#
#   bash benchmarks/gpu_training.sh bundle     # here: .devcarry/ (pretrained MiniLM in half precision,
#                                              # CoNLL train/dev/test) and .whl/ (pydantic)
#   bash benchmarks/gpu_training.sh run OUT    # there: baseline vs robust, 6 epochs each; results and
#                                              # the robust checkpoint (half precision, in parts) in OUT
#   bash benchmarks/gpu_training.sh unpack OUT DIR   # here: the robust checkpoint back into DIR
set -euo pipefail
cd "$(dirname "$0")/.."
case "${1:-}" in
bundle)
  PY=${PYTHON:-.venv/bin/python}
  DATA=${LINKNER_CONLL_DIR:-../shared/data/conll2003}
  ENCODER=$("$PY" -c "from linkner.model.encoders import default_encoder_path; print(default_encoder_path())")
  rm -rf .devcarry && mkdir -p .devcarry/encoder .devcarry/data .whl
  for f in config.json tokenizer.json tokenizer_config.json vocab.txt special_tokens_map.json; do
    cp "$ENCODER/$f" .devcarry/encoder/
  done
  "$PY" - "$ENCODER" <<'PY'
import sys
from safetensors.torch import load_file, save_file
tensors = load_file(f"{sys.argv[1]}/model.safetensors")
save_file({k: v.half() if v.is_floating_point() else v for k, v in tensors.items()},
          ".devcarry/encoder/model.safetensors", metadata={"format": "pt"})
PY
  cp "$DATA"/{train,dev,test}.txt .devcarry/data/
  "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl \
    $("$PY" -m pip list --format=freeze 2>/dev/null | grep -iE '^(pydantic|pydantic_core|annotated-types|typing-inspection)==')
  du -sh .devcarry .whl
  ;;
run)
  OUT_DIR=${2:?output folder}
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1
  nvidia-smi -L || true
  timeout "${TRAIN_TIMEOUT_S:-470}" python3 benchmarks/robust_training.py --train .devcarry/data/train.txt \
    --dev .devcarry/data/dev.txt --test .devcarry/data/test.txt --encoder .devcarry/encoder --device cuda \
    --epochs "${EPOCHS:-6}" --threads 4 --parallel --no-progress --save-robust /tmp/robust --out "$OUT_DIR/robust_training"
  bash "$0" pack /tmp/robust "$OUT_DIR"
  ;;
pack)  # a checkpoint folder -> half-precision weights in 15 MB parts + a tar of the rest
  python3 - "$2" <<'PY'
import sys
from safetensors.torch import load_file, save_file
tensors = load_file(f"{sys.argv[1]}/model.safetensors")
save_file({k: v.half() if v.is_floating_point() else v for k, v in tensors.items()}, "/tmp/weights16.safetensors",
          metadata={"format": "pt"})
PY
  split -b 15M -d /tmp/weights16.safetensors "$3/weights16.part"
  tar -C "$2" -cf "$3/checkpoint-rest.tar" --exclude model.safetensors --exclude train_state.pt .
  ;;
unpack)  # parts + tar from OUT -> a checkpoint folder DIR (weights back in float32)
  mkdir -p "$3"
  tar -C "$3" -xf "$2/checkpoint-rest.tar"
  cat "$2"/weights16.part* > /tmp/weights16.safetensors
  ${PYTHON:-.venv/bin/python} - "$3" <<'PY'
import sys
from safetensors.torch import load_file, save_file
tensors = load_file("/tmp/weights16.safetensors")
save_file({k: v.float() if v.is_floating_point() else v for k, v in tensors.items()}, f"{sys.argv[1]}/model.safetensors",
          metadata={"format": "pt"})
PY
  ;;
*) echo "usage: $0 bundle | run OUT | pack CHECKPOINT OUT | unpack OUT DIR" >&2; exit 2 ;;
esac
