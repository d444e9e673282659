"""results/convergence/commands.sh's steps between experiments
(coarseseg_jax.experiments.chain), and authors_similarity.sh's runs."""

import json
import os
import subprocess
import sys

import pytest

from coarseseg_jax import config_validation
from coarseseg_jax import workdir as workdir_lib
from coarseseg_jax.experiments import chain
from coarseseg_jax.experiments import methods
from coarseseg_jax.experiments import tables

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _grid_config(dataset, budget, seed, lmbda=0.05):
  """The config the budget grid gives its hcfcn_slic run (the grid's own
  route: its base, the run's delta and `methods.BUDGET_DELTA`)."""
  grid = config_validation.resolve(methods.generated_base(dataset)[0]).config
  delta = {**methods.run_delta("hcfcn_slic", {"lmbda": lmbda,
                                              "epochs": budget}, seed),
           **methods.BUDGET_DELTA}
  config = workdir_lib.config_as_json(config_validation.resolve(
      methods.apply(grid, delta)).config)
  config["data"]["data_dir"] = "/elsewhere/data"  # Another machine's.
  return config


def _grid_run(archive, dataset, budget, seed, config, finished=True):
  run = os.path.join(archive, dataset, "budget", "hcfcn_slic",
                     f"epochs{budget}_lmbda0.05", f"seed{seed}")
  os.makedirs(run)
  with open(os.path.join(run, "config.json"), "w") as f:
    json.dump(config, f)
  if finished:
    with open(os.path.join(run, "results.json"), "w") as f:
      json.dump({"seed": seed}, f)
  return run


def _sweep(archive, dataset, budget, seed):
  return os.path.join(archive, dataset, f"main_e{budget}_cosine",
                      "hcfcn_slic", "lmbda0.05", f"seed{seed}")


def test_grid_runs_are_copied_into_the_sweep_only_where_configs_agree(
    tmp_path):
  archive = str(tmp_path / "archive")
  seeds = methods.selection_seeds(methods.FULL.sweep_seeds)
  assert seeds == (100, 101)
  _grid_run(archive, "synthetic", 50, 100, _grid_config("synthetic", 50, 100))
  # Seed 101's run holds seed 100's config: not the sweep's seed-101 run.
  _grid_run(archive, "synthetic", 50, 101, _grid_config("synthetic", 50, 100))
  lines = chain.reuse_sweep_runs(archive, "synthetic", 50)
  assert len(lines) == 2 and lines[0].endswith(
      _sweep(archive, "synthetic", 50, 100))
  assert "seed101: another config than the sweep's; not reused" in lines[1]
  copied = _sweep(archive, "synthetic", 50, 100)
  assert sorted(os.listdir(copied)) == ["config.json", "results.json"]
  assert not os.path.exists(_sweep(archive, "synthetic", 50, 101))
  assert not any(p.endswith(".tmp") for p in os.listdir(copied))
  # A second call leaves the copy alone (and reports nothing to do).
  with open(os.path.join(copied, "results.json"), "w") as f:
    f.write("{}")
  assert chain.reuse_sweep_runs(archive, "synthetic", 50) == [
      lines[1]]
  with open(os.path.join(copied, "results.json")) as f:
    assert f.read() == "{}"


def test_a_grid_run_of_another_budget_or_unfinished_is_not_reused(tmp_path):
  archive = str(tmp_path / "archive")
  # Filed under 50 epochs but trained for 100: another config.
  _grid_run(archive, "texture_mosaic", 50, 100,
            _grid_config("texture_mosaic", 100, 100))
  _grid_run(archive, "texture_mosaic", 50, 101,
            _grid_config("texture_mosaic", 50, 101), finished=False)
  lines = chain.reuse_sweep_runs(archive, "texture_mosaic", 50)
  assert len(lines) == 1 and "seed100: another config" in lines[0]
  assert not os.path.exists(os.path.dirname(
      _sweep(archive, "texture_mosaic", 50, 100)))


def test_a_copy_stopped_before_its_results_is_made_again(tmp_path):
  archive = str(tmp_path / "archive")
  _grid_run(archive, "synthetic", 25, 100, _grid_config("synthetic", 25, 100))
  dst = _sweep(archive, "synthetic", 25, 100)
  os.makedirs(dst)
  open(os.path.join(dst, "config.json"), "w").close()  # No results.json.
  assert len(chain.reuse_sweep_runs(archive, "synthetic", 25)) == 1
  with open(os.path.join(dst, "config.json")) as f:
    assert json.load(f)["train"]["num_epochs"] == 25
  with open(os.path.join(dst, "results.json")) as f:
    assert json.load(f) == {"seed": 100}


def test_chosen_budget_and_num_seeds_from_the_files(tmp_path):
  """The choice from the grid's archived runs: fcn gains 0.09 from 25 to 50
  epochs, then 0.0075; the other methods stop gaining at 25."""
  archive = str(tmp_path / "archive")
  accs = {25: (0.60, 0.62), 50: (0.70, 0.70), 100: (0.70, 0.715)}
  for method in methods.BUDGET_METHODS:
    for epochs, pair in accs.items():
      for seed, acc in zip((100, 101), pair):
        params = {**methods.budget_params(method, methods.FULL),
                  "epochs": epochs}
        run = os.path.join(archive, "synthetic", "budget", method,
                           methods.param_name(params), f"seed{seed}")
        os.makedirs(run)
        with open(os.path.join(run, "results.json"), "w") as f:
          json.dump({"validation": {"accuracy_mean": acc if method == "fcn"
                                    else 0.6}}, f)
  assert chain.chosen_budget(archive, "synthetic", "25,50,100") == (50, 100)
  # Any order, repeats (as commands.sh may pass): the grid 25, 100.
  assert chain.chosen_budget(archive, "synthetic", "100,25,25") == (100, 100)
  with pytest.raises(ValueError, match="epochs200/seed100/results.json is "
                     "missing: the grid's runs are not all finished"):
    chain.chosen_budget(archive, "synthetic", "25,200")
  runs = tmp_path / "synthetic_main_runs.json"
  runs.write_text(json.dumps({"seeds": [0, 1, 2, 3, 4, 5, 6]}))
  assert chain.num_seeds(str(runs)) == 7
  assert chain.main(["chosen-budget", archive, "synthetic", "25,50"]) == 0


@pytest.mark.parametrize("argv, code, says", [
    (["num-seeds", "missing.json"], 1, "num-seeds: [Errno 2]"),
    (["num-seeds", "{bad}"], 1, "has no 'seeds' key"),
    (["chosen-budget", "x.csv"], 2, "usage: "),
    (["chosen-budget", "archive", "synthetic", "25"], 1,
     "chosen-budget: archive/synthetic/budget/fcn/epochs25/seed100/"),
    (["budget", "x.csv"], 2, "usage: ")])
def test_bad_input_is_one_line(tmp_path, monkeypatch, capsys, argv, code,
                               says):
  monkeypatch.chdir(tmp_path)
  (tmp_path / "bad.json").write_text("{}")
  argv = ["bad.json" if a == "{bad}" else a for a in argv]
  assert chain.main(argv) == code
  out, err = capsys.readouterr()
  assert says in err and len(err.strip().splitlines()) == 1 and not out


def test_the_module_runs_as_commands_sh_calls_it(tmp_path):
  (tmp_path / "runs.json").write_text(json.dumps({"seeds": [0, 1, 2]}))
  run = lambda *argv: subprocess.run(
      [sys.executable, "-m", "coarseseg_jax.experiments.chain", *argv],
      capture_output=True, text=True, cwd=str(tmp_path), timeout=300,
      env={**os.environ, "PYTHONPATH": ROOT}, check=False)
  proc = run("num-seeds", "runs.json")
  assert (proc.returncode, proc.stdout) == (0, "3\n"), proc.stderr[-2000:]


_FAKE_PYTHON = r"""#!/usr/bin/env bash
# Stands in for Python: logs each call; chosen-budget answers the next line
# of $ANSWERS ("fail" exits 1), num-seeds answers 7.
echo "$*" >> "$LOG"
if [ "$2" = coarseseg_jax.experiments.chain ]; then
  case "$3" in
    chosen-budget)
      answer=$(head -n 1 "$ANSWERS"); sed -i 1d "$ANSWERS"
      [ "$answer" != fail ] || { echo "chosen-budget: no file" >&2; exit 1; }
      echo "$answer" ;;
    num-seeds) echo 7 ;;
  esac
fi
"""


def _fake_python(tmp_path, script):
  """`script` as an executable `python` in `tmp_path` (for $PYTHON)."""
  fake = tmp_path / "python"
  fake.write_text(script)
  fake.chmod(0o755)
  return fake


def _commands_sh(tmp_path, answers, *datasets):
  """Runs results/convergence/commands.sh with Python scripted; returns
  (return code, the calls it made, one line each, as `-m module args`)."""
  fake = _fake_python(tmp_path, _FAKE_PYTHON)
  (tmp_path / "answers").write_text("".join(a + "\n" for a in answers))
  log = tmp_path / "calls.log"
  proc = subprocess.run(
      ["bash", os.path.join(ROOT, "results", "convergence", "commands.sh"),
       *datasets], capture_output=True, text=True, timeout=60, check=False,
      env={**os.environ, "PYTHON": str(fake), "LOG": str(log),
           "ANSWERS": str(tmp_path / "answers")})
  calls = log.read_text().splitlines() if log.exists() else []
  prefix = "-m coarseseg_jax.experiments --archive=results/archive " \
           "--out=results/convergence --share "
  return proc.returncode, [c.replace(prefix, "experiments ") for c in calls]


def test_commands_sh_doubles_the_grid_until_a_larger_budget_shows_the_stop(
    tmp_path):
  chain_call = "-m coarseseg_jax.experiments.chain "
  code, calls = _commands_sh(tmp_path, ["100 100", "100 200"], "synthetic")
  assert code == 0
  main = "experiments --experiment=main --dataset=synthetic " \
         "--num_epochs=100 --cosine"
  assert calls == [
      "experiments --experiment=budget --dataset=synthetic "
      "--budgets=25,50,100",
      chain_call + "chosen-budget results/archive synthetic 25,50,100",
      "experiments --experiment=budget --dataset=synthetic "
      "--budgets=25,50,100,200",
      chain_call + "chosen-budget results/archive synthetic 25,50,100,200",
      chain_call + "reuse-sweep-runs results/archive synthetic 100",
      main + " --methods=fcn,hcfcn_slic,hcfcn --seeds=5 --ci_target=0.02 "
      "--max_seeds=10",
      chain_call + "num-seeds results/convergence/synthetic_main_runs.json",
      main + " --seeds=7 --methods=fcn,hcfcn,hcfcn_slic,hcfcn_authors_slic,"
      "hcfcn_slic_refined_free"]


def test_commands_sh_stops_doubling_at_its_cap_and_on_a_failed_step(
    tmp_path):
  code, calls = _commands_sh(tmp_path, ["100 100", "200 200", "400 400"],
                             "texture_mosaic")
  assert code == 0
  assert [c.split("--budgets=")[1] for c in calls if "--budgets=" in c] == [
      "25,50,100", "25,50,100,200", "25,50,100,200,400"]
  assert "--num_epochs=400 --cosine" in calls[-1]  # The cap is the budget.
  (tmp_path / "calls.log").unlink()
  code, calls = _commands_sh(tmp_path, ["fail"], "synthetic", "texture_mosaic")
  assert code == 1 and len(calls) == 2  # The grid, its failed choice: done.


_FAKE_MAIN = r"""#!/usr/bin/env bash
# Stands in for Python's training: logs each `-m coarseseg_jax.main` call and
# writes its workdir's config.json and results.json; other calls (the
# summary) run the real Python.
if [ "$1" = -m ]; then
  echo "$*" >> "$LOG"
  for a in "$@"; do case "$a" in --workdir=*) w=${a#--workdir=};; esac; done
  mkdir -p "$w" && echo '{}' > "$w/config.json"
  echo '{"train_accuracy": 0.5, "best_validation": 0.5, "selected_step": 1,
         "test": {"accuracy_mean": 0.5, "boundary_recall_mean": 0.1}}' \
      > "$w/results.json"
else
  exec "$REAL_PYTHON" "$@"
fi
"""


def _flags(call):
  """`--config.key=value` flags of a logged call, as a dict."""
  return dict(a[len("--config."):].split("=", 1) for a in call.split()
              if a.startswith("--config."))


def test_authors_similarity_sh_changes_only_similarity_epochs_and_seed(
    tmp_path):
  """Its runs are the texture_mosaic table's hcfcn_authors_slic command
  (as the committed runs file records it) with the similarity, epochs and
  seed changed; finished runs are not run again."""
  fake = _fake_python(tmp_path, _FAKE_MAIN)
  log = tmp_path / "calls.log"
  env = {**os.environ, "PYTHON": str(fake), "LOG": str(log),
         "REAL_PYTHON": sys.executable, "ROOT": str(tmp_path / "runs"),
         "ARCHIVE": str(tmp_path / "archive")}
  script = os.path.join(ROOT, "results", "convergence",
                        "authors_similarity.sh")
  run = lambda: subprocess.run(["bash", script], capture_output=True,
                               text=True, timeout=120, env=env, check=False)
  proc = run()
  assert proc.returncode == 0, proc.stderr[-2000:]
  with open(os.path.join(ROOT, "results", "convergence",
                         "texture_mosaic_main_runs.json")) as f:
    table = next(_flags(r["command"]) for r in json.load(f)["runs"]
                 if "/hcfcn_authors_slic/" in r["workdir"]
                 and r["workdir"].endswith("/seed0"))
  changed = {"train.num_epochs", "seed", "model.similarity", "model.tau"}
  calls = [_flags(c) for c in log.read_text().splitlines()]
  assert [(c["model.similarity"], c["model.tau"], c["train.num_epochs"],
           c["seed"]) for c in calls] == [
               ("dot", "0.07", "10", "100"), ("cosine", "0.05", "10", "100"),
               ("cosine", "0.05", "50", "0")]
  assert (table["model.similarity"], table["model.tau"]) == ("dot", "0.07")
  for c in calls:
    assert {k: v for k, v in c.items() if k not in changed} == {
        k: v.strip("'") for k, v in table.items() if k not in changed}
  for name, seed in (("dot", 100), ("cosine_t0.05", 100),
                     ("cosine_t0.05_e50", 0)):
    assert (tmp_path / "archive" / name / f"seed{seed}" /
            "results.json").exists()
  assert len(proc.stdout.strip().splitlines()) == 3
  log.unlink()
  assert run().returncode == 0 and not log.exists()  # Finished: not rerun.
