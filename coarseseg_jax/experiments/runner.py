"""Runs the experiments: each run trained once, or reused.

`Runner.run` trains a run (`train.train_and_evaluate` in this process, so
runs of one config, the seeds of a method, share its compiled programs) in
its own workdir unless it finished there (then it reads results.json, after
checking the workdir's config is this run's, or restores it from the
archive: a tree of finished runs' config.json and results.json under the
same relative paths, which can be committed, so an experiment too long for
one machine goes on from another); `refined_labels` refines the train
split with a finished run (`--mode=refine`) for a method that learns from
it. The experiments that ask for the runs are `designs`'. Each run's
`coarseseg_jax.main` command is recorded, so any cell of a table can be
rerun alone.
"""

import contextlib
import logging
import os
import time
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import tqdm

from coarseseg_jax import errors
from coarseseg_jax import filesystem
from coarseseg_jax import workdir as workdir_lib
from coarseseg_jax.experiments import methods
from coarseseg_jax.experiments import tables

log = logging.getLogger("coarseseg_jax.experiments")

# What the archive keeps of a finished run (paths relative to its workdir)
# and of a refine output: enough to skip the run, not to resume or draw it.
ARCHIVED_RUN = ("config.json", "results.json")
# A finished run retrained for its checkpoint, where its figures differ.
RETRAINED = "results_retrained.json"
# In a workdir while its finished run is trained again: the kept results.
RETRAINING = "retraining.json"


def run_dir(root: str, method: str, params: dict, seed: int) -> str:
  """A run's folder under an experiment's workdir root or archive:
  `<root>/<method>/<params>/seed<k>`."""
  return os.path.join(root, method, methods.param_name(params), f"seed{seed}")


def copy_files(src_dir: str, dst_dir: str, names) -> bool:
  """Copies the files `names` that exist from `src_dir` to `dst_dir`
  (atomically each); returns whether all of them existed."""
  found = True
  for name in names:
    src = filesystem.path(src_dir) / name
    if src.exists():
      filesystem.write_bytes(filesystem.path(dst_dir) / name, src.read_bytes())
    else:
      found = False
  return found


class Runner:
  """Runs (or skips) single runs under `root`; remembers what it did.

  Args:
    base: the base config (sizes included).
    root: the experiment's workdir root.
    config_file, base_overrides: how the base is made on the command line
      (for each run's `coarseseg_jax.main` command).
    bar: a progress bar to advance by one a run (default none).
    archive: where finished runs are archived (`ARCHIVED_RUN`) under their
      path relative to `root`, and restored from when the workdir lacks
      them; None: no archive.
    on_record: called with `records` after every record (each run,
      refine step or retraining's differences), e.g. to write them down
      at once, so that an invocation stopped part-way keeps how its
      finished runs were trained.
    share: other processes run the same experiment on the same workdirs
      (`--share`): a run another live process trains (its workdir's lock)
      is waited for instead of refused; `run_many` and `skipping_busy`
      first train the runs no one else trains.
    poll_seconds: how often a wait looks whether the other run is done.
  """

  def __init__(self, base, root: str, config_file: str = "configs/synthetic.py",
               base_overrides: Optional[Dict] = None, bar=None,
               archive: Optional[str] = None,
               on_record: Optional[Callable[[List[dict]], None]] = None,
               share: bool = False, poll_seconds: float = 30.0):
    self.base, self.root, self.archive = base, root, archive
    self.config_file, self.base_overrides = config_file, base_overrides or {}
    self.records: List[dict] = []
    self.bar = bar or tqdm.tqdm(disable=True)
    self.on_record = on_record or (lambda records: None)
    self.share, self.poll_seconds = share, poll_seconds
    self.skipping = False  # Busy runs: None at once, not waited for.

  def record(self, **entry) -> bool:
    """Appends a record (workdir, status, seconds, command, ...); returns
    whether it did. A workdir this runner recorded already and now finds
    finished (`status` skipped: a second pass over the same runs, as
    `--ci_target`'s) is not recorded twice."""
    if entry.get("status") == "skipped" and any(
        r.get("workdir") == entry.get("workdir") for r in self.records):
      return False
    self.records.append(entry)
    self.on_record(self.records)
    return True

  def workdir(self, method: str, params: dict, seed: int) -> str:
    return run_dir(self.root, method, params, seed)

  def archived(self, workdir: str) -> Optional[str]:
    """`workdir`'s place in the archive (None without an archive)."""
    if self.archive is None:
      return None
    return os.path.join(self.archive, os.path.relpath(workdir, self.root))

  def restore(self, workdir: str, names=ARCHIVED_RUN) -> bool:
    """Copies `names` from the archive into `workdir` if all are there."""
    where = self.archived(workdir)
    if where is None or not all((filesystem.path(where) / n).exists()
                                for n in names):
      return False
    return copy_files(where, workdir, names)

  def save(self, workdir: str, names=ARCHIVED_RUN) -> None:
    where = self.archived(workdir)
    if where is not None:
      copy_files(workdir, where, names)

  def finished(self, method: str, params: dict, seed: int) -> bool:
    """Whether the run has results, in its workdir or in the archive."""
    workdir = self.workdir(method, params, seed)
    where = self.archived(workdir)
    return any(filesystem.path(d).joinpath("results.json").exists()
               for d in (workdir, where) if d is not None)

  def ensure_checkpoint(self, method: str, params: dict, seed: int) -> None:
    """Trains the run again if its workdir holds no checkpoint (restored
    from the archive, which keeps none), for what needs its model.

    Runs need not repeat exactly on another machine. If the retrained
    test figures differ from the finished run's, its results.json (what the
    tables report) is kept, the retrained one is written beside it as
    `RETRAINED` (workdir and archive), a warning names the differences and
    the run's record gets `differs` (metric: [kept, retrained]). While it
    retrains, `RETRAINING` in the workdir holds the kept results: the
    archive is left as it is, and a retraining stopped part-way resumes
    (its checkpoint is no finished run's) and still keeps them."""
    workdir = filesystem.path(self.workdir(method, params, seed))
    marker, results_path = workdir / RETRAINING, workdir / "results.json"
    if marker.exists():
      kept = filesystem.read_json(marker)["kept"]
    elif any((workdir / d).exists() for d in ("best", "checkpoints")):
      return
    else:
      if not results_path.exists():
        self.restore(str(workdir))
      kept = (filesystem.read_json(results_path) if results_path.exists()
              else None)
      filesystem.write_json(marker, {"kept": kept})
    results_path.unlink(missing_ok=True)
    retrained = self.run(method, params, seed, archive=False)
    differs = {} if kept is None else {
        m: [tables.mean_of(kept, "test", m),
            tables.mean_of(retrained, "test", m)] for m in tables.TEST_METRICS}
    differs = {m: v for m, v in differs.items() if not np.isclose(
        v[0], v[1], rtol=0, atol=1e-6, equal_nan=True)}
    if differs:
      log.warning("retraining %s for its checkpoint gave other test figures "
                  "(%s); the tables keep the finished run's, the retrained "
                  "ones are in %s", workdir, ", ".join(
                      f"{m} {a:.4f} -> {b:.4f}" for m, (a, b) in
                      differs.items()), RETRAINED)
      filesystem.write_json(workdir / RETRAINED, retrained)
      filesystem.write_json(results_path, kept)
      self.save(str(workdir), ARCHIVED_RUN + (RETRAINED,))
      self.records[-1]["differs"] = differs
      self.on_record(self.records)
    elif kept is None:  # Its first finished training: archive it.
      self.save(str(workdir))
    marker.unlink()

  @contextlib.contextmanager
  def skipping_busy(self, skipping: bool = True):
    """Within it, `run` returns None at once for a run another process
    trains (with `share`; a first pass over a design's runs), or with
    `skipping=False` waits for it again."""
    before, self.skipping = self.skipping, skipping
    try:
      yield
    finally:
      self.skipping = before

  def run_many(self, specs: Sequence[Tuple]) -> List[dict]:
    """`run(*spec)` of each spec (method, params, seed[, extra]), in order;
    all their results (the others' waited for, also within
    `skipping_busy`). With `share`, the runs no other process trains go
    first, so that processes sharing them take turns instead of queueing
    behind each other."""
    if self.share:
      with self.skipping_busy():
        for spec in specs:
          self.run(*spec)
    with self.skipping_busy(False):
      return [self.run(*spec) for spec in specs]

  def wait_for(self, workdir: str) -> None:
    """Waits while another live process holds `workdir` (its lock)."""
    lock = workdir_lib.WorkdirLock(workdir)
    holder = lock.holder()
    if holder is None:
      return
    log.info("waiting for %s: trained by pid %s on %s since %s", workdir,
             holder.get("pid"), holder.get("host"), holder.get("started"))
    while lock.holder() is not None:
      time.sleep(self.poll_seconds)

  def run(self, method: str, params: dict, seed: int,
          extra: Optional[methods.Delta] = None, archive: bool = True
          ) -> Optional[dict]:
    """results.json of the run, training it first unless it is finished
    (or archived). `extra`: more dotted overrides (a refined method's
    data.refined_dir). `archive=False` (a finished run trained again for its
    checkpoint, whose reported results the archive holds): the archive is
    neither read nor written. With `share`, a run another live process
    trains is waited for (status "shared" where it was), or within
    `skipping_busy` is None at once."""
    delta = {**methods.run_delta(method, params, seed), **(extra or {})}
    config = methods.apply(self.base, delta)
    workdir, tic = self.workdir(method, params, seed), time.time()
    command = methods.command_line(self.config_file, self.base_overrides,
                                   delta, workdir)
    results_path = filesystem.path(workdir) / "results.json"
    # TensorFlow loads here, not at import: flag errors stay one fast line.
    from coarseseg_jax import config_validation  # pylint: disable=g-import-not-at-top
    from coarseseg_jax import train  # pylint: disable=g-import-not-at-top
    status = "skipped"
    if archive and not results_path.exists() and self.restore(workdir):
      status = "restored"
    resolved = config_validation.resolve(config)  # As training checks it.
    results = None
    while results is None:
      if results_path.exists():
        # Refuses another config.
        workdir_lib.check_config(workdir, resolved.config)
        results = filesystem.read_json(results_path)
        break
      if self.share and workdir_lib.WorkdirLock(workdir).holder():
        if self.skipping:
          return None
        self.wait_for(workdir)  # Its results, or if it died its checkpoints.
        status = "shared"
        continue
      try:
        log.info("training %s\n  = %s", workdir, command)
        results = train.train_and_evaluate(resolved, workdir)
        status = "trained"
      except errors.WorkdirInUse:  # Taken since the look: with share,
        if not self.share:         # look again.
          raise
    if archive and status != "restored":
      self.save(workdir)
    # seconds: this call's; train_seconds: the run's training, all parts.
    if self.record(workdir=workdir, status=status,
                   seconds=round(time.time() - tic, 1),
                   train_seconds=results.get("train_seconds"),
                   command=command):  # Not a second pass's skip again.
      log.info("%s %s (%.0f s)", status, workdir, time.time() - tic)
      self.bar.update(1)
    return results


def refined_labels(runner: Runner, method: str, params: dict, seed: int,
                   labels_needed: bool = True,
                   subdir: str = methods.REFINED_SUBDIR) -> Optional[str]:
  """The train split refined by `method`'s run (`params`, `seed`), written
  into `<its workdir>/<subdir>` unless it is there (`--mode=refine`);
  returns the dir. `labels_needed=False` (the run that learns from them is
  finished): the refine report alone, restored from the archive, will do;
  otherwise a report without its labels (restored) is refined again. The
  refining holds the dir's lock. With `runner.share`, a teacher another
  process trains, or its refining there, is waited for; within
  `skipping_busy` they, or a teacher not finished yet, give None."""
  from coarseseg_jax import config_validation  # pylint: disable=g-import-not-at-top
  from coarseseg_jax.refine import driver as refine_driver  # pylint: disable=g-import-not-at-top
  from coarseseg_jax.datasets import refined as refined_data  # pylint: disable=g-import-not-at-top
  source = runner.workdir(method, params, seed)
  out = os.path.join(source, subdir)
  split = runner.base.data.train_split
  command = (f"python -m coarseseg_jax.main --workdir={source} --mode=refine"
             f" --split={split} --output_dir={out}")
  status, tic = "skipped", time.time()
  report_name = os.path.relpath(refined_data.report_path(out, split), out)
  if not labels_needed and not filesystem.path(
      refined_data.report_path(out, split)).exists() and runner.restore(
          out, (report_name,)):
    status = "restored"
  have = lambda: filesystem.path(refined_data.report_path(
      out, split)).exists() and (not labels_needed or filesystem.path(
          refined_data.manifest_path(out, split)).exists())
  while not have():
    busy = [d for d in (source, out) if runner.share and
            workdir_lib.WorkdirLock(d).holder()]  # Its teacher, or refining.
    if busy or (runner.skipping and not runner.finished(method, params,
                                                        seed)):
      if runner.skipping:
        return None
      for d in busy:
        runner.wait_for(d)
      continue
    lock = workdir_lib.WorkdirLock(out)
    try:
      os.makedirs(out, exist_ok=True)
      with lock:
        runner.ensure_checkpoint(method, params, seed)
        status = "refined"
        log.info("refining %s\n  = %s", source, command)
        config = methods.apply(runner.base,
                               methods.run_delta(method, params, seed))
        report = refine_driver.run(config_validation.resolve(config, "split"),
                                   source, out, split=split)
        log.info("%s", report["line"])
    except errors.WorkdirInUse:  # Taken since the look: with share, look
      if not runner.share:       # again.
        raise
  if status != "restored":
    runner.save(out, (report_name,))
  runner.record(workdir=out, status=status,
                seconds=round(time.time() - tic, 1), command=command)
  return out
