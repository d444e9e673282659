#!/usr/bin/env bash
# The two commands of the README:
#   ./run.sh            install into .venv and run the quick start: HCFCN-16 on
#                       synthetic coarse labels with and without the SLIC
#                       regularizer, side by side (coarseseg_jax.quickstart)
#   ./run.sh test       install into .venv (with test extras) and run the test suite
# Extra arguments are passed on (to coarseseg_jax.quickstart, or to pytest).
set -euo pipefail
cd "$(dirname "$0")"
PYTHON=${PYTHON:-python3}

install() {  # $1: pip extras, e.g. "train" or "train,test,beam"
  if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
    .venv/bin/python -m pip install -q --upgrade pip
  fi
  # One stamp per extra and pyproject.toml version: an install with more
  # extras (./run.sh test) serves one with fewer (./run.sh).
  local sum extra missing=""
  sum=$(cksum < pyproject.toml | cut -d' ' -f1)
  for extra in ${1//,/ }; do
    [ -f ".venv/.installed-$extra-$sum" ] || missing=1
  done
  if [ -n "$missing" ]; then
    .venv/bin/python -m pip install -q -e ".[$1]"
    for extra in ${1//,/ }; do touch ".venv/.installed-$extra-$sum"; done
  fi
}

if [ "${1:-}" = "test" ]; then
  shift
  install "train,test,beam"
  exec .venv/bin/python -m pytest -n auto --durations=15 "$@"
fi
install "train"
exec .venv/bin/python -m coarseseg_jax.quickstart --config=configs/synthetic.py \
  --workdir=workdirs/quickstart "$@"
