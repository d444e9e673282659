r"""The steps of results/convergence/commands.sh between its experiments.

  python -m coarseseg_jax.experiments.chain chosen-budget ARCHIVE DATASET \
      BUDGETS
  python -m coarseseg_jax.experiments.chain reuse-sweep-runs ARCHIVE \
      DATASET BUDGET
  python -m coarseseg_jax.experiments.chain num-seeds RUNS_JSON

`chosen-budget` prints the budget a grid's archived runs choose and its
largest budget; `reuse-sweep-runs` copies the grid's `hcfcn_slic` runs at
a budget into the main experiment's sweep at that budget where their config
is the sweep's, key for key; `num-seeds` prints how many reported seeds a
main experiment's runs file used. A missing or unreadable file is one line
naming it.
"""

import dataclasses
import json
import os
import sys
from typing import List, Sequence, Tuple

from coarseseg_jax import config_validation
from coarseseg_jax import workdir
from coarseseg_jax.experiments import designs
from coarseseg_jax.experiments import methods
from coarseseg_jax.experiments import runner
from coarseseg_jax.experiments import tables

_REUSED = "hcfcn_slic"  # The one method both the grid and the sweep run.


def chosen_budget(archive: str, dataset: str, budgets: str
                  ) -> Tuple[int, int]:
  """(the budget the grid's rule chooses, the largest budget), in epochs,
  for the grid `budgets` ("25,50,100") of `dataset`: what the budget
  experiment's table says, computed from the grid's runs in the archive
  (`methods.BUDGET_METHODS` on the FULL setup's selection seeds), which no
  process rewrites, where the table is rewritten by every call (a `--share`
  process at an earlier call would give an older grid's choice).

  Raises:
    ValueError: a run of the grid is not in the archive (one line).
  """
  setup = dataclasses.replace(methods.FULL, budgets=tuple(
      sorted({int(b) for b in budgets.split(",")})))
  rows = []
  for method, params, seed in designs.budget_runs(
      setup, methods.selection_seeds(setup.budget_seeds)):
    path = os.path.join(runner.run_dir(os.path.join(
        archive, dataset, "budget"), method, params, seed), "results.json")
    if not os.path.exists(path):
      raise ValueError(f"{path} is missing: the grid's runs are not all "
                       "finished (run the budget experiment first).")
    with open(path) as f:
      rows.append(tables.budget_seed_row(method, params, seed, json.load(f)))
  return tables.budget_tables(rows)[2], setup.budgets[-1]


def sweep_config(dataset: str, budget: int, seed: int) -> dict:
  """The resolved config (as `workdir.config_as_json`) the main experiment
  with --num_epochs=budget --cosine gives its `hcfcn_slic` sweep run at the
  grid's fixed lambda and `seed`."""
  base = config_validation.resolve(methods.generated_base(
      dataset, num_epochs=budget, cosine=True)[0]).config  # As the CLI does.
  params = methods.budget_params(_REUSED, methods.FULL)
  return workdir.config_as_json(config_validation.resolve(methods.apply(
      base, methods.run_delta(_REUSED, params, seed))).config)


def reuse_sweep_runs(archive: str, dataset: str, budget: int) -> List[str]:
  """Copies each finished grid run `<archive>/<dataset>/budget/hcfcn_slic/
  epochs<budget>_<params>/seed<k>` (k a selection seed) to
  `<archive>/<dataset>/main_e<budget>_cosine/hcfcn_slic/<params>/seed<k>`
  where its config.json is `sweep_config`'s, key for key (the data's
  location aside), so the sweep restores it instead of training it again.
  A run already there (its results.json) is left alone. Each file is
  copied whole, results.json last, so a copy stopped part-way is no
  finished run and is made again; processes copying at once (`--share`
  lanes) write the same files. Returns one line per grid run found:
  copied, or why not."""
  params = methods.budget_params(_REUSED, methods.FULL)
  lines = []
  for seed in methods.selection_seeds(methods.FULL.sweep_seeds):
    src = runner.run_dir(os.path.join(archive, dataset, "budget"), _REUSED,
                         {**params, "epochs": budget}, seed)
    dst = runner.run_dir(os.path.join(
        archive, dataset, f"main_e{budget}_cosine"), _REUSED, params, seed)
    if os.path.exists(os.path.join(dst, "results.json")) or not (
        os.path.exists(os.path.join(src, "results.json"))):
      continue
    want = sweep_config(dataset, budget, seed)
    with open(os.path.join(src, "config.json")) as f:
      have = json.load(f)
    have["data"]["data_dir"] = want["data"]["data_dir"]
    if have != want:
      lines.append(f"{src}: another config than the sweep's; not reused")
      continue
    runner.copy_files(src, dst, runner.ARCHIVED_RUN)  # results.json last.
    lines.append(f"{src} -> {dst}")
  return lines


def num_seeds(runs_json: str) -> int:
  """How many reported seeds a main experiment's runs file used (its
  `--ci_target` may have added some)."""
  with open(runs_json) as f:
    return len(json.load(f)["seeds"])


_USAGE = ("usage: python -m coarseseg_jax.experiments.chain chosen-budget "
          "ARCHIVE DATASET BUDGETS | reuse-sweep-runs ARCHIVE DATASET BUDGET "
          "| num-seeds RUNS_JSON")


def main(argv: Sequence[str]) -> int:
  """The command line (module docstring); 0, or 2 on bad usage, 1 on a
  missing or unreadable file, with one line on stderr."""
  commands = {
      "chosen-budget": (3, lambda a: "%d %d" % chosen_budget(*a)),
      "reuse-sweep-runs": (3, lambda a: "\n".join(reuse_sweep_runs(
          a[0], a[1], int(a[2])))),
      "num-seeds": (1, lambda a: str(num_seeds(a[0])))}
  if not argv or argv[0] not in commands or (
      len(argv) - 1 != commands[argv[0]][0]):
    print(_USAGE, file=sys.stderr)
    return 2
  try:
    text = commands[argv[0]][1](argv[1:])
  except (OSError, ValueError) as e:
    print(f"{argv[0]}: {e}", file=sys.stderr)
    return 1
  except KeyError as e:
    print(f"{argv[0]}: {argv[1]} has no {e} key; is it the file the "
          "experiment wrote?", file=sys.stderr)
    return 1
  if text:
    print(text)
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
