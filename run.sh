#!/usr/bin/env bash
# The two commands of the README:
#   ./run.sh            install into .venv and train + evaluate on the synthetic default
#   ./run.sh test       install into .venv (with test extras) and run the test suite
# Extra arguments are passed on (to coarseseg_jax.main, or to pytest).
set -euo pipefail
cd "$(dirname "$0")"
PYTHON=${PYTHON:-python3}

install() {  # $1: pip extras spec, e.g. "" or "[test]"
  if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
    .venv/bin/python -m pip install -q --upgrade pip
  fi
  local stamp=".venv/.installed$1-$(cat pyproject.toml | cksum | cut -d' ' -f1)"
  if [ ! -f "$stamp" ]; then
    .venv/bin/python -m pip install -q -e ".$1"
    touch "$stamp"
  fi
}

if [ "${1:-}" = "test" ]; then
  shift
  install "[test,beam]"
  exec .venv/bin/python -m pytest -n auto --durations=15 "$@"
fi
install ""
exec .venv/bin/python -m coarseseg_jax.main --config=configs/synthetic.py \
  --workdir=workdirs/synthetic "$@"
