#!/usr/bin/env bash
# Why the authors' code at their size (`hcfcn_authors_slic`) does not fit its
# texture_mosaic training labels: the same runs with the project's similarity
# (cosine, tau 0.05) in place of the authors' (dot, tau 0.07), every other
# option the table's. The flags are the command of the texture_mosaic main
# table's `hcfcn_authors_slic` runs (texture_mosaic_main_runs.json), with the
# epochs, seed and similarity changed. results/README.md reads the figures:
#
#   bash results/convergence/authors_similarity.sh
#
# 10 epochs on selection seed 100, both similarities; 50 epochs on seed 0
# with cosine (dot at 50 epochs on seed 0 is the table's run). Each run's
# config.json and results.json (`train_accuracy`: its last epoch's training
# accuracy) go to results/archive/texture_mosaic/authors_similarity/. A run
# with results is not trained or tested again. (ROOT, ARCHIVE: elsewhere.)
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PYTHON:-.venv/bin/python}
ROOT=${ROOT:-workdirs/diagnostics/texture_authors}
ARCHIVE=${ARCHIVE:-results/archive/texture_mosaic/authors_similarity}
BASE=(--config=configs/texture_mosaic.py
  --config.data.builder_kwargs.num_train=200
  --config.data.builder_kwargs.num_validation=40
  --config.data.builder_kwargs.num_test=100
  --config.data.builder_kwargs.image_size=160 --config.data.crop_size=160
  --config.data.coarse_kernel=15 --config.data.slic_num_segments=200
  --config.data.shuffle_buffer=200 --config.model.width=64
  --config.model.head_channels=64 --config.model.sim_features=48
  --config.train.eval_every_epochs=5 --config.train.log_every_steps=10
  --config.train.checkpoint_every_steps=50 --config.train.num_figures=3
  --config.train.lr_schedule=constant --config.train.lmbda=0.05
  --config.train.kappa=0.0 --config.model.out_of_grid=zero
  --config.model.input_norm=none --config.model.weight_init=pytorch
  --config.model.deform_bias=True --config.train.slic_resize=bilinear
  --config.train.slic_position_norm=stride_squared
  --config.train.validation_mode=train --config.train.optimizer=adam
  --config.train.learning_rate=0.0005 --config.model.assign_init=default
  "--config.model.stage_blocks=(3,4,6)")
DOT=(--config.model.similarity=dot --config.model.tau=0.07)
COSINE=(--config.model.similarity=cosine --config.model.tau=0.05)

run() {  # NAME EPOCHS SEED SIMILARITY-FLAGS...
  local name=$1 epochs=$2 seed=$3; shift 3
  local workdir="$ROOT/$name/seed$seed"
  [ -f "$workdir/results.json" ] || "$PY" -m coarseseg_jax.main "${BASE[@]}" \
    "$@" --config.train.num_epochs="$epochs" --config.seed="$seed" \
    --workdir="$workdir"
  mkdir -p "$ARCHIVE/$name/seed$seed"
  cp "$workdir/config.json" "$workdir/results.json" "$ARCHIVE/$name/seed$seed/"
}

run dot 10 100 "${DOT[@]}"
run cosine_t0.05 10 100 "${COSINE[@]}"
run cosine_t0.05_e50 50 0 "${COSINE[@]}"
"$PY" - "$ARCHIVE" <<'EOF'
import json, pathlib, sys
for f in sorted(pathlib.Path(sys.argv[1]).glob("*/seed*/results.json")):
  r = json.loads(f.read_text())
  print(f"{f.parent.parent.name:18s} {f.parent.name:8s} train accuracy "
        f"{r['train_accuracy']:.3f}  validation {r['best_validation']:.3f} "
        f"(step {r['selected_step']})  test accuracy "
        f"{r['test']['accuracy_mean']:.3f}  boundary recall "
        f"{r['test']['boundary_recall_mean']:.3f}")
EOF
