#!/usr/bin/env bash
# The in-process benchmark on a GPU machine that has torch and transformers but not this project's
# environment (the `device` tool's machines), within what such a call carries (64 MiB).
#
#   bash scripts/device/gpu_inprocess.sh bundle   # here: .devcarry/ (half-precision checkpoint, CoNLL
#                                                 # test + 2,000 train sentences) and .whl/ (pydantic)
#   bash scripts/device/gpu_inprocess.sh run OUT  # there: fp32 and fp16-autocast rows, packed and padded,
#                                                 # JSON + Markdown in OUT
set -euo pipefail
cd "$(dirname "$0")/../.."
source scripts/device/device_common.sh
case "${1:-}" in
bundle)
  rm -rf .devcarry && mkdir -p .devcarry/model .devcarry/data .whl
  cp artifacts/models/default/{linkner_config.json,tokenizer.json,tokenizer_config.json} .devcarry/model/
  cast_weights "$PY" artifacts/models/default/model.safetensors .devcarry/model/model.safetensors half
  cp "$DATA/test.txt" .devcarry/data/
  awk 'BEGIN{n=0} {print} /^$/{n++; if (n>=2100) exit}' "$DATA/train.txt" > .devcarry/data/train.txt
  download_pydantic_wheels "$PY"
  du -sh .devcarry .whl
  ;;
run)
  OUT_DIR=${2:?output folder}
  install_carried_wheels
  common=(--model .devcarry/model --data-dir .devcarry/data --device cuda --threads 4 --hf-encoder checkpoint)
  # packed rows (--pack-tokens) also measure the same batches padded: both layouts side by side
  python3 -m benchmarks.inprocess "${common[@]}" --batch-size 64 --autocast none --pack-tokens 512 \
    --out "$OUT_DIR/inprocess-gpu-fp32-b64.json"
  python3 -m benchmarks.inprocess "${common[@]}" --batch-size 64 --autocast float16 --pack-tokens 512 \
    --out "$OUT_DIR/inprocess-gpu-fp16-b64.json"
  python3 -m benchmarks.inprocess "${common[@]}" --batch-size 16 --autocast float16 --pack-tokens 256 \
    --out "$OUT_DIR/inprocess-gpu-fp16-b16.json"
  ;;
*) echo "usage: $0 bundle | run OUT" >&2; exit 2 ;;
esac
