"""`--share`: processes running the same experiment on the same workdirs
take turns at its runs. Another process is played by a lock.json naming a
live process of this host (a `sleep`), finished by the runner's own wait
(its `time.sleep`); training is a stand-in that takes the lock as training
does (`workdir.claim`)."""

import dataclasses
import datetime
import json
import os
import socket
import subprocess

import pytest

from coarseseg_jax import config_validation
from coarseseg_jax import errors
from coarseseg_jax import filesystem
from coarseseg_jax import train
from coarseseg_jax import workdir as workdir_lib
from coarseseg_jax.configs import synthetic
from coarseseg_jax.experiments import designs
from coarseseg_jax.experiments import methods
from coarseseg_jax.experiments import report
from coarseseg_jax.experiments import runner as runner_lib

BASE = methods.apply(synthetic.get_config(), methods.QUICK_SYNTHETIC)


class Other:
  """Another process: holds runs' workdirs (their locks name a live pid)
  and finishes the oldest one each time the runner waits."""

  def __init__(self, runner):
    self.runner, self.held, self.waits = runner, [], 0
    self.proc = subprocess.Popen(["sleep", "600"])

  def _lock(self, workdir):
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, workdir_lib.LOCK_FILE), "w") as f:
      json.dump({"host": socket.gethostname(), "pid": self.proc.pid,
                 "started": datetime.datetime.now().isoformat(),
                 "token": "other"}, f)

  def hold(self, method, params, seed, score=0.5):
    """Trains a run; finished: its config.json and results.json."""
    workdir = self.runner.workdir(method, params, seed)
    self._lock(workdir)

    def finish():
      workdir_lib.record_config(workdir, config_validation.resolve(
          methods.apply(BASE, methods.run_delta(method, params,
                                                seed))).config)
      filesystem.write_json(os.path.join(workdir, "results.json"),
                            _results(score, "other"))
    self.held.append((workdir, finish))

  def hold_refining(self, out, split="train"):
    """Refines into `out`; finished: its report and labels."""
    self._lock(out)
    self.held.append((out, lambda: _write_refined(out, split)))

  def finish_one(self, seconds):
    del seconds
    self.waits += 1
    workdir, finish = self.held.pop(0)
    finish()
    os.remove(os.path.join(workdir, workdir_lib.LOCK_FILE))

  def close(self):
    self.proc.kill()
    self.proc.wait()


def _write_refined(out, split):
  for name in (f"refine_{split}.json", f"refine_{split}.csv"):
    with open(os.path.join(out, name), "w") as f:
      f.write("{}")


def _results(score, by):
  return {"validation": {"accuracy_mean": score}, "test": {}, "by": by}


@pytest.fixture
def shared(tmp_path, monkeypatch):
  """(runner with share, the other process, the runs this one trained)."""
  runner = runner_lib.Runner(BASE, str(tmp_path / "wd"), share=True,
                             poll_seconds=0)
  other, trained = Other(runner), []

  def fake_train(resolved, workdir):
    with workdir_lib.claim(resolved.config, workdir):
      trained.append(os.path.relpath(workdir, runner.root))
      results = _results(0.5, "this")
      filesystem.write_json(os.path.join(workdir, "results.json"), results)
    return results

  monkeypatch.setattr(train, "train_and_evaluate", fake_train)
  monkeypatch.setattr(runner_lib.time, "sleep", other.finish_one)
  yield runner, other, trained
  other.close()


def test_run_many_trains_the_free_runs_then_waits_for_the_others(shared):
  runner, other, trained = shared
  other.hold("fcn", {}, 1)
  results = runner.run_many([("fcn", {}, s) for s in (0, 1, 2)])
  assert trained == ["fcn/ce/seed0", "fcn/ce/seed2"]
  assert [r["by"] for r in results] == ["this", "other", "this"]
  assert [(os.path.basename(r["workdir"]), r["status"])
          for r in runner.records] == [("seed0", "trained"),
                                       ("seed2", "trained"),
                                       ("seed1", "shared")]
  assert other.waits == 1
  # Within skipping_busy, a busy run is None at once (no wait).
  other.hold("fcn", {}, 3)
  with runner.skipping_busy():
    assert runner.run("fcn", {}, 3) is None
  assert other.waits == 1 and trained[-1] == "fcn/ce/seed2"


def test_without_share_a_busy_run_is_refused_in_one_line(shared):
  runner, other, _ = shared
  runner.share = False
  other.hold("fcn", {}, 0)
  with pytest.raises(errors.WorkdirInUse, match="in use by a run"):
    runner.run("fcn", {}, 0)
  assert other.waits == 0


def test_the_main_design_waits_only_for_what_its_choices_need(shared):
  """First pass: the free runs, waiting only for the sweep's selection run
  the other process trains (the choice needs it); the busy fcn run is
  waited for in the second pass, which writes nothing new."""
  runner, other, trained = shared
  setup = dataclasses.replace(methods.QUICK, lambdas=(0.05, 0.1),
                              widen_limit=0)
  other.hold("hcfcn_slic", {"lmbda": 0.1}, 100, score=0.9)  # The winner.
  other.hold("fcn", {}, 0)
  with runner.skipping_busy():
    designs._main_runs(runner, setup, [0, 1], [100], "accuracy",
                       ["fcn", "hcfcn_slic"])
  assert trained == ["fcn/ce/seed1", "hcfcn_slic/lmbda0.05/seed100",
                     "hcfcn_slic/lmbda0.1/seed0", "hcfcn_slic/lmbda0.1/seed1"]
  assert other.waits == 1 and other.held[0][0] == runner.workdir("fcn", {}, 0)
  chosen, results, rows, _ = designs._main_runs(
      runner, setup, [0, 1], [100], "accuracy", ["fcn", "hcfcn_slic"])
  assert chosen["hcfcn_slic"] == {"lmbda": 0.1} and len(rows) == 2
  assert [r["by"] for r in results["fcn"]] == ["other", "this"]
  assert other.waits == 2 and len(trained) == 4


def test_the_main_design_trains_in_the_order_asked_and_writes_table_order(
    shared, monkeypatch):
  """`--methods=fcn,hcfcn_slic`: hcfcn (always added) is trained last, the
  files list the methods in table order."""
  runner, _, trained = shared
  setup = dataclasses.replace(methods.QUICK, lambdas=(0.05,))  # No sweep.
  written = {}

  def write_main(out, base, setup, figures, rows, *args):
    del out, base, setup, args
    written.update(figures=list(figures), rows=[r["method"] for r in rows])

  monkeypatch.setattr(report, "write_main", write_main)
  names = methods.select_methods(["fcn", "hcfcn_slic"])
  designs.run_main(runner, setup, [0], [100], "out", "accuracy", names)
  assert trained == ["fcn/ce/seed0", "hcfcn_slic/lmbda0.05/seed0",
                     "hcfcn/ce/seed0"]
  assert written["rows"] == written["figures"] == ["fcn", "hcfcn",
                                                   "hcfcn_slic"]


def test_a_student_waits_for_its_teacher_and_one_refining(shared,
                                                          monkeypatch):
  from coarseseg_jax.refine import driver as refine_driver  # pylint: disable=g-import-not-at-top
  runner, other, _ = shared
  refined = []

  def fake_refine(resolved, workdir, out, split):
    del resolved, workdir
    refined.append(out)
    _write_refined(out, split)
    return {"line": "refined"}

  monkeypatch.setattr(refine_driver, "run", fake_refine)
  params = {"lmbda": 0.05}
  other.hold("hcfcn_slic", params, 0)
  with runner.skipping_busy():  # Its teacher is still training: skipped.
    assert runner_lib.refined_labels(runner, "hcfcn_slic", params, 0) is None
  assert other.waits == 0 and refined == []
  teacher = runner.workdir("hcfcn_slic", params, 0)
  os.makedirs(os.path.join(teacher, "checkpoints"))  # Its model, once done.
  out = runner_lib.refined_labels(runner, "hcfcn_slic", params, 0)
  assert other.waits == 1 and refined == [out]  # Waited, then refined.
  assert not os.path.exists(os.path.join(out, workdir_lib.LOCK_FILE))
  # Another process refining it again: skipped, then waited for; not
  # refined a second time here.
  os.remove(os.path.join(out, "refine_train.csv"))
  other.hold_refining(out)
  with runner.skipping_busy():
    assert runner_lib.refined_labels(runner, "hcfcn_slic", params, 0) is None
  assert runner_lib.refined_labels(runner, "hcfcn_slic", params, 0) == out
  assert other.waits == 2 and refined == [out]
