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
# or the two datasets side by side, one core each (about 10 % more runs an
# hour on 2 cores than one after the other; results/README.md):
#
#   taskset -c 0 bash results/convergence/commands.sh texture_mosaic &
#   taskset -c 1 bash results/convergence/commands.sh synthetic &
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PYTHON:-.venv/bin/python}
OUT=results/convergence
MAX_BUDGET=400  # The grid doubles its largest budget up to this.

experiments() {
  "$PY" -m coarseseg_jax.experiments --archive=results/archive --out="$OUT" "$@"
}

chosen_budget() {  # $1: dataset. The grid's chosen budget and its largest.
  "$PY" - "$OUT/$1_budget_seeds.csv" <<'EOF'
import sys
from coarseseg_jax.experiments import tables
rows = tables.read_seeds(sys.argv[1])
print(tables.budget_tables(rows)[2], max(r["epochs"] for r in rows))
EOF
}

reuse_sweep_runs() {  # $1: dataset, $2: budget. The grid's hcfcn_slic runs
  # (lambda 0.05, selection seeds) are the main sweep's at that value: copied
  # into its archive where their config is the one the sweep gives them, key
  # for key (the data's location aside). The runner checks it again.
  "$PY" - "$1" "$2" <<'EOF'
import json, os, shutil, sys
from coarseseg_jax import config_validation, workdir
from coarseseg_jax.experiments import methods
dataset, budget = sys.argv[1], int(sys.argv[2])
base = config_validation.resolve(methods.generated_base(
    dataset, num_epochs=budget, cosine=True)[0]).config  # As the CLI does.
for seed in methods.selection_seeds(methods.FULL.sweep_seeds):
  src = (f"results/archive/{dataset}/budget/hcfcn_slic/"
         f"epochs{budget}_lmbda0.05/seed{seed}")
  dst = (f"results/archive/{dataset}/main_e{budget}_cosine/hcfcn_slic/"
         f"lmbda0.05/seed{seed}")
  if os.path.exists(dst) or not os.path.exists(f"{src}/results.json"):
    continue
  want = workdir.config_as_json(config_validation.resolve(methods.apply(
      base, methods.run_delta("hcfcn_slic", {"lmbda": 0.05}, seed))).config)
  with open(f"{src}/config.json") as f:
    have = json.load(f)
  have["data"]["data_dir"] = want["data"]["data_dir"]
  if have == want:
    shutil.copytree(src, dst)
    print(f"{src} -> {dst}")
  else:
    print(f"{src}: another config than the sweep's; not reused")
EOF
}

datasets=("$@")
[ $# -gt 0 ] || datasets=(synthetic texture_mosaic)
for dataset in "${datasets[@]}"; do
  # 1. The budget grid, doubled while its largest budget is the one chosen
  #    (no larger budget run to show the gain has stopped).
  budgets=25,50,100
  while :; do
    experiments --experiment=budget --dataset="$dataset" --budgets="$budgets"
    read -r chosen largest < <(chosen_budget "$dataset")
    if [ "$chosen" -lt "$largest" ] || [ "$largest" -ge "$MAX_BUDGET" ]; then
      break
    fi
    budgets="$budgets,$((largest * 2))"
  done
  # 2. The core comparison at that budget: seeds added while the CI of
  #    hcfcn_slic - fcn accuracy is wider than +-0.02 (up to 10), then the
  #    authors' size and the self-training row on the same seeds. (The
  #    self-training row refines with its seed's hcfcn_slic checkpoint; the
  #    archive keeps none, so on a machine that restored that run it is
  #    trained again first: run teacher and student of a seed on one machine,
  #    e.g. --methods=hcfcn_slic,hcfcn_slic_refined_free --seeds=1, 2, ...)
  reuse_sweep_runs "$dataset" "$chosen"
  main=(--experiment=main --dataset="$dataset" --num_epochs="$chosen" --cosine)
  experiments "${main[@]}" --methods=fcn,hcfcn,hcfcn_slic --seeds=5 \
    --ci_target=0.02 --max_seeds=10
  seeds=$("$PY" -c "import json, sys; print(len(json.load(open(sys.argv[1]))['seeds']))" \
    "$OUT/${dataset}_main_runs.json")
  experiments "${main[@]}" --seeds="$seeds" \
    --methods=fcn,hcfcn,hcfcn_slic,hcfcn_authors_slic,hcfcn_slic_refined_free
done
