#!/usr/bin/env bash
# Regenerate the Python gRPC stubs from protos/linkner/v1/linkner.proto (reproducible; a test
# fails when the committed stubs are stale). Usage: scripts/gen_protos.sh [OUTPUT_ROOT]
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-.}
python=${PYTHON:-.venv/bin/python}
"$python" -m grpc_tools.protoc -I . --python_out="$out" --pyi_out="$out" --grpc_python_out="$out" \
  protos/linkner/v1/linkner.proto
