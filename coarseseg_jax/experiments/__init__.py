r"""The experiments: the main table, the coarseness sweep, the similarity
sweep, the training budget.

  python -m coarseseg_jax.experiments \
      --experiment=main|coarseness|similarity|budget

The package: `methods` (what runs: setups, and the method table, each method
a config delta with what it sweeps and needs), `runner` (trains or reuses
each run, archives it), `designs` (the experiments: which runs on which
seeds, sweeps), `tables` (every table as a pure function of per-seed rows),
`report` (the files: CSV, Markdown), `plots` (the figures), `__main__` (the
command line), `chain` (results/convergence/commands.sh's steps between
experiments: the budget a grid chose, reusing its runs in the main sweep).

(docs/experiments.md has the variants.) Without `--config` the runs use the
synthetic dataset (or `--dataset=texture_mosaic`) sized by
`methods.FULL_SYNTHETIC`, with it the config's. Each run is a method of
`methods.METHODS` with its swept values and seed, trained on coarse labels
(except `hcfcn_fine`), tested on fine ones, in its own workdir
<workdir_root>/<dataset>/<experiment>[_quick][_e<n>][_cosine][_coarseval]/
<method>/<params>/seed<k>;
`<out>/<dataset>_<experiment>_runs.json` lists each run's
`coarseseg_jax.main` command. A finished run is skipped, an interrupted one
resumes, a workdir of another config stops the runner; with `--archive=DIR`
finished runs (config.json, results.json) are kept in DIR too and restored
from it on another machine; with `--share` several processes (a core or
an accelerator each) running the same command take turns at its runs
(`runner.Runner`). Each experiment writes
`<dataset>_<experiment>_seeds.csv`, one row per reported run, and its tables
(`coarseseg_jax.report`: main `<dataset>_coarse*`, `_coarseness*`,
`_similarity*`, `_budget*`).

Reported runs use seeds 0..--seeds-1, selection never: lambda and kappa are
swept on `methods.selection_seeds` (100, 101, ...), by a VALIDATION metric
(--select_metric) of the checkpoint each run kept, widening a grid whose
winner is at its edge (`sweep`); the similarity experiment runs on
selection seeds too, and so does `budget` (each method at several epoch
budgets, each run's cosine schedule ending at its own last step; the table
names the smallest budget beyond which mean validation accuracy gains less
than `tables.BUDGET_TOLERANCE`). --validation_labels=coarse selects on coarse
validation labels (no fine labels needed; tables `<dataset>_coarseval_*`);
`both` runs both, and main writes `<dataset>_validation_labels.{csv,md}`.
"""
