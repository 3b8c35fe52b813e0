#!/usr/bin/env bash
# python -m benchmarks.robust_training on a GPU machine that has torch and transformers but not this
# project's environment (the `device` tool's machines), within what such a call carries (64 MiB)
# and brings back (8 files of at most 16 MiB).
#
#   bash scripts/device/gpu_training.sh bundle     # here: .devcarry/ (pretrained MiniLM in half precision,
#                                                  # CoNLL train/dev/test) and .whl/ (pydantic)
#   bash scripts/device/gpu_training.sh run OUT    # there: baseline vs robust, 6 epochs each; results and
#                                                  # the robust checkpoint (half precision, in parts) in OUT
#   bash scripts/device/gpu_training.sh unpack OUT DIR   # here: the robust checkpoint back into DIR
set -euo pipefail
cd "$(dirname "$0")/../.."
source scripts/device/device_common.sh
case "${1:-}" in
bundle)
  ENCODER=$("$PY" -c "from linkner.model.encoders import default_encoder_path; print(default_encoder_path())")
  rm -rf .devcarry && mkdir -p .devcarry/encoder .devcarry/data .whl
  for f in config.json tokenizer.json tokenizer_config.json vocab.txt special_tokens_map.json; do
    cp "$ENCODER/$f" .devcarry/encoder/
  done
  cast_weights "$PY" "$ENCODER/model.safetensors" .devcarry/encoder/model.safetensors half
  cp "$DATA"/{train,dev,test}.txt .devcarry/data/
  download_pydantic_wheels "$PY"
  du -sh .devcarry .whl
  ;;
run)
  OUT_DIR=${2:?output folder}
  install_carried_wheels
  timeout "${TRAIN_TIMEOUT_S:-470}" python3 -m benchmarks.robust_training --train .devcarry/data/train.txt \
    --dev .devcarry/data/dev.txt --test .devcarry/data/test.txt --encoder .devcarry/encoder --device cuda \
    --epochs "${EPOCHS:-6}" --threads 4 --parallel --no-progress --save-robust /tmp/robust --out "$OUT_DIR/robust_training"
  bash "$0" pack /tmp/robust "$OUT_DIR"
  ;;
pack)  # a checkpoint folder -> half-precision weights in 15 MB parts + a tar of the rest
  cast_weights python3 "$2/model.safetensors" /tmp/weights16.safetensors half
  split -b 15M -d /tmp/weights16.safetensors "$3/weights16.part"
  tar -C "$2" -cf "$3/checkpoint-rest.tar" --exclude model.safetensors --exclude train_state.pt .
  ;;
unpack)  # parts + tar from OUT -> a checkpoint folder DIR (weights back in float32)
  mkdir -p "$3"
  tar -C "$3" -xf "$2/checkpoint-rest.tar"
  cat "$2"/weights16.part* > /tmp/weights16.safetensors
  cast_weights "$PY" /tmp/weights16.safetensors "$3/model.safetensors" float
  ;;
*) echo "usage: $0 bundle | run OUT | pack CHECKPOINT OUT | unpack OUT DIR" >&2; exit 2 ;;
esac
