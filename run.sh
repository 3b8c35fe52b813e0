#!/usr/bin/env bash
# The two commands of a new user:
#   ./run.sh         set up, then run the main job
#   ./run.sh test    set up, then run the test suite (--fast: the quick subset, about 2 minutes)
set -euo pipefail
cd "$(dirname "$0")"
what=main
case "${1:-}" in
  main|test) what=$1; shift ;;
esac
case "$what" in
  main)
    scripts/setup.sh
    exec .venv/bin/python -m serve "$@"
    ;;
  test)
    scripts/setup.sh
    # -X faulthandler: a crash prints every thread's stack, even one at interpreter exit after pytest's summary
    if [ "${1:-}" = "--fast" ]; then  # the quick subset: no Ray cluster, LLM engine, network or benchmark run
      shift
      exec .venv/bin/python -X faulthandler -m pytest -m "not slow" "$@"
    fi
    exec .venv/bin/python -X faulthandler -m pytest "$@"
    ;;
  *)
    echo "usage: ./run.sh [main|test] [args...]   (options alone go to the main job)" >&2
    exit 2
    ;;
esac
