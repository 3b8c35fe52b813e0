#!/usr/bin/env bash
# The two commands of a new user:
#   ./run.sh         set up, then run the main job
#   ./run.sh test    set up, then run the test suite
set -euo pipefail
cd "$(dirname "$0")"
what=${1:-main}
[ $# -gt 0 ] && shift
case "$what" in
  main)
    scripts/setup.sh
    exec .venv/bin/python -m serve "$@"
    ;;
  test)
    scripts/setup.sh
    exec .venv/bin/python -m pytest "$@"
    ;;
  *)
    echo "usage: ./run.sh [main|test] [args...]" >&2
    exit 2
    ;;
esac
