#!/usr/bin/env bash
# Issue 41's runs, in the order they are made: per dataset the budget grid,
# then the core comparison at the budget it chose. Every command restores the
# runs results/archive holds instead of training them, so the chain goes on
# from a fresh clone on any machine: commit results/archive as runs finish.
# Tables and runs files land in results/convergence/ (<dataset>_budget*,
# <dataset>_coarse*, <dataset>_main_*). Two cores: days, see results/README.md.
#
#   bash results/convergence/commands.sh [synthetic] [texture_mosaic]
#
# or on two cores, one process each: both share the runs (`--share`: each
# trains the runs the other does not, and waits for the other's where a
# choice needs them), e.g. the two datasets side by side, or one dataset:
#
#   taskset -c 0 bash results/convergence/commands.sh synthetic &
#   taskset -c 1 bash results/convergence/commands.sh synthetic &
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PYTHON:-.venv/bin/python}
OUT=results/convergence
MAX_BUDGET=400  # The grid doubles its largest budget up to this.

experiments() {
  "$PY" -m coarseseg_jax.experiments --archive=results/archive --out="$OUT" \
    --share "$@"
}

chain() {  # The steps between experiments: coarseseg_jax/experiments/chain.py.
  "$PY" -m coarseseg_jax.experiments.chain "$@"
}

datasets=("$@")
[ $# -gt 0 ] || datasets=(synthetic texture_mosaic)
for dataset in "${datasets[@]}"; do
  # 1. The budget grid, doubled while its largest budget is the one chosen
  #    (no larger budget run to show the gain has stopped).
  budgets=25,50,100
  while :; do
    experiments --experiment=budget --dataset="$dataset" --budgets="$budgets"
    choice=$(chain chosen-budget results/archive "$dataset" "$budgets")
    read -r chosen largest <<< "$choice"
    if [ "$chosen" -lt "$largest" ] || [ "$largest" -ge "$MAX_BUDGET" ]; then
      break
    fi
    budgets="$budgets,$((largest * 2))"
  done
  # 2. The core comparison at that budget. The grid's hcfcn_slic runs there
  #    (lambda 0.05, selection seeds) are the main sweep's at that value:
  #    copied into its archive where their config is the sweep's, key for
  #    key (the runner checks it again). Seeds are added while the CI of
  #    hcfcn_slic - fcn accuracy is wider than +-0.02 (up to 10), then the
  #    authors' size and the self-training row run on the same seeds. (The
  #    self-training row refines with its seed's hcfcn_slic checkpoint; the
  #    archive keeps none, so on a machine that restored that run it is
  #    trained again first: run teacher and student of a seed on one machine,
  #    e.g. --methods=hcfcn_slic,hcfcn_slic_refined_free --seeds=1, 2, ...)
  #    hcfcn_slic comes before hcfcn, so the headline pair (hcfcn_slic - fcn)
  #    is complete 5 runs sooner; the order changes no run.
  chain reuse-sweep-runs results/archive "$dataset" "$chosen"
  main=(--experiment=main --dataset="$dataset" --num_epochs="$chosen" --cosine)
  experiments "${main[@]}" --methods=fcn,hcfcn_slic,hcfcn --seeds=5 \
    --ci_target=0.02 --max_seeds=10
  seeds=$(chain num-seeds "$OUT/${dataset}_main_runs.json")
  experiments "${main[@]}" --seeds="$seeds" \
    --methods=fcn,hcfcn,hcfcn_slic,hcfcn_authors_slic,hcfcn_slic_refined_free
done
