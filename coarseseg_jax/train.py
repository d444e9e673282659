"""Training: the loop.

`train_and_evaluate(resolved, workdir)` (`resolved` being
`config_validation.resolve(config)`) checks the workdir (config.json),
prepares the dataset if needed, trains with data parallelism over every
device of every host (a 1-D `Mesh` named `data`: batches sharded, parameters
replicated), evaluates on the validation split each `eval_every_epochs`
(against its fine labels, or its coarse ones with `data.validation_labels =
"coarse"`: selection without fine labels), keeps the latest and the best
checkpoints, and finally evaluates the best
state on the test split and writes `workdir/results.json` and
`workdir/figures/`.

Resuming: started again with the same command after an interruption (kill -9
included), it restores the newest checkpoint and asks the input pipeline for
the batches from that step on; the pipeline yields exactly the batches an
uninterrupted run would (each epoch's order and augmentation are a pure
function of the seed and the epoch), so no data is lost or repeated.

The train state and its optimizer live in `state.py`, the train step in
`step.py`, evaluation in `evaluate.py`; this module holds the loop.
"""

import json
import logging
import time

import jax
import numpy as np
import tqdm

from coarseseg_jax import checkpoints
from coarseseg_jax import config_validation
from coarseseg_jax import datasets
from coarseseg_jax import evaluate
from coarseseg_jax import figures
from coarseseg_jax import filesystem
from coarseseg_jax import finetune
from coarseseg_jax import host
from coarseseg_jax import input_pipeline
from coarseseg_jax import interruption
from coarseseg_jax import losses
from coarseseg_jax import models
from coarseseg_jax import profiling
from coarseseg_jax import sharding
from coarseseg_jax import state as state_lib
from coarseseg_jax import step as step_lib
from coarseseg_jax import workdir as workdir_lib
from coarseseg_jax import writers

log = logging.getLogger(__name__)


class _Run:
  """What the loop needs across phases (plain holder, no logic)."""

  def __init__(self, config, workdir, builder, num_steps: int,
               stop: interruption.StopRequest):
    self.config, self.workdir, self.stop = config, workdir, stop
    self.builder = builder
    self.mesh = sharding.make_mesh()
    self.model = models.create_model(config.model)
    self.writer = writers.MetricWriter(workdir)
    root = filesystem.path(workdir)
    self.latest = checkpoints.Checkpointer(
        root / "checkpoints", config.train.keep_checkpoints)
    self.best = checkpoints.Checkpointer(root / "best", 1)
    self.evaluator = evaluate.Evaluator(
        self.model, config.model.num_classes, self.mesh,
        datasets.class_names(self.builder))
    self.txs = {phase: state_lib.optimizer_for_phase(config.train, phase,
                                                     num_steps)
                for phase in state_lib.PHASES}
    self.train_step = step_lib.make_train_step(config)
    self.loss_steps = (  # The authors' fine-tuning rule: losses of splits.
        finetune.jit_loss_steps(self.model,
                                losses.LossSettings.from_config(config))
        if config.train.finetune_rule == "authors" else None)

  def close(self) -> None:
    self.writer.close()
    self.latest.close()
    self.best.close()

  def eval_split(self, state, split, targets: str = "fine",
                 **kwargs) -> evaluate.EvalResult:
    """Evaluates on `split` against its `targets` labels (fine | coarse)."""
    stop = (self.stop.requested if jax.process_count() == 1 else None)
    return self.evaluator.evaluate_split(
        state_lib.variables(state), self.builder, self.config.data, split,
        targets=targets, should_stop=stop, **kwargs)

  def loss_of_split(self, state, split, targets: str,
                    train_mode: bool) -> float:
    """The mean training loss (with the regularizer) of `split`'s images
    against its `targets` labels (`finetune.split_loss`)."""
    d = self.config.data
    batches = input_pipeline.create_eval_iterator(
        self.builder, d, split, d.eval_batch_size, targets=targets)
    return finetune.split_loss(self.loss_steps[bool(train_mode)],
                               state_lib.variables(state), batches, self.mesh)


def _log_scalars(run: _Run, history, *, tic: float, step: int,
                 ps: state_lib.PhaseState, bar) -> float:
  """Writes the mean of the steps since the last log; returns a new tic."""
  t = run.config.train
  scalars = {k: float(np.mean([float(h[k]) for h in history]))
             for k in history[0]}
  scalars["images_per_second"] = (
      len(history) * t.batch_size / max(time.time() - tic, 1e-9))
  run.writer.write(step, ps.phase, scalars)
  # Cross-entropy only: the validation loss has no regularizer terms.
  ps.epoch_losses.append(scalars["cross_entropy"])
  ps.epoch_accuracies.append(scalars["accuracy"])
  bar.set_postfix(loss=f"{scalars['loss']:.4f}",
                  img_s=f"{scalars['images_per_second']:.1f}")
  bar.update(len(history))
  return time.time()


def _validate(run: _Run, state, *, step: int, epoch: int,
              ps: state_lib.PhaseState, steps_per_epoch: int) -> bool:
  """Validation at an epoch end; returns whether fine-tuning should stop.

  Writes the summary, per-class IoU and accuracy (by class name) and a few
  validation images (image, prediction, learned and SLIC superpixels).
  """
  t, phase = run.config.train, ps.phase
  result = run.eval_split(state, run.config.data.eval_split,
                          run.config.data.validation_labels,
                          num_samples=t.num_validation_images,
                          train_mode=t.validation_mode == "train")
  summary = result.summary
  if phase == "finetune":  # The stop rule's losses (finetune.py).
    loss = summary["loss"]
    if t.finetune_rule == "authors":  # With the regularizer.
      loss = run.loss_of_split(state, run.config.data.eval_split,
                               run.config.data.validation_labels,
                               train_mode=t.validation_mode == "train")
    summary = {**summary, "finetune_loss": loss,
               "finetune_target": ps.target_loss}
  per_class = {f"{k}/{name}": v[k] for name, v in result.per_class.items()
               for k in ("iou", "accuracy")}
  run.writer.write(step, "validation", {**summary, **per_class})
  run.writer.write_images(step, "validation", {
      f"sample_{i}": figures.panel_strip(s, run.config.model.num_classes)
      for i, s in enumerate(result.samples)})
  ps.train_loss = float(np.mean(ps.epoch_losses[-steps_per_epoch:]))
  if ps.epoch_accuracies:  # Empty: resumed from an older checkpoint's end.
    ps.train_accuracy = float(np.mean(ps.epoch_accuracies[-steps_per_epoch:]))
  ps.epoch_losses, ps.epoch_accuracies = [], []
  log.info("%s epoch %d (step %d): validation %s", phase, epoch, step,
           json.dumps({k: round(v, 4) for k, v in summary.items()}))
  metric = summary.get(f"{t.select_metric}_mean")
  if phase == "train" and metric is not None and (
      ps.best_metric is None or metric > ps.best_metric):
    ps.best_metric, ps.best_step, ps.best_validation = metric, step, summary
    run.best.save(step, state, ps.to_json())
  return phase == "finetune" and finetune.stops(summary["finetune_loss"],
                                                ps.target_loss)


def _train_phase(run: _Run, state, ps: state_lib.PhaseState, *, split: str,
                 first_step: int, num_steps: int, steps_per_epoch: int):
  """Trains steps [resumed step, first_step + num_steps) of `ps.phase`;
  returns the state (`ps` is updated in place).

  `ps.phase` is "train" (model selection on validation) or "finetune" (stops
  early once the validation loss is no higher than `ps.target_loss`:
  `train.finetune_rule`, coarseseg_jax/finetune.py).
  """
  config, t, phase = run.config, run.config.train, ps.phase
  step = int(jax.device_get(state.step))
  it = input_pipeline.create_train_iterator(
      run.builder, config.data, t.batch_size,
      seed=state_lib.data_seed(config.seed, phase),
      start_step=step - first_step, split=split)
  if ps.pending_validation == step:  # An interruption cut it short.
    ps.pending_validation = None
    ps.finetune_done = ps.finetune_done or _validate(
        run, state, step=step, epoch=(step - first_step) // steps_per_epoch,
        ps=ps, steps_per_epoch=steps_per_epoch)
    if ps.finetune_done and phase == "finetune":
      return state
  bar = tqdm.tqdm(total=first_step + num_steps, initial=step, desc=phase,
                  mininterval=5, disable=jax.process_index() != 0)
  try:
    state = _train_steps(run, state, ps, it, bar, first_step=first_step,
                         end=first_step + num_steps,
                         steps_per_epoch=steps_per_epoch)
  finally:
    bar.close()
  run.latest.wait()
  return state


def _train_steps(run: _Run, state, ps, it, bar, *, first_step: int, end: int,
                 steps_per_epoch: int):
  """The loop of `_train_phase`: step, log, validate, checkpoint, stop."""
  t = run.config.train
  step = int(jax.device_get(state.step))
  history, tic = [], time.time()
  counted = tic  # The wall time before it is in ps.train_seconds.

  def count_seconds():
    nonlocal counted
    now = time.time()
    ps.count_seconds(now - counted)
    counted = now

  profiler = profiling.StepProfiler(
      str(filesystem.path(run.workdir) / "tensorboard" / "profile"),
      t.profile_steps)
  while step < end:
    batch = sharding.shard_batch(next(it), run.mesh)
    profiler.before_step()
    state, step_metrics = run.train_step(state, batch)
    profiler.after_step(state)
    history.append(step_metrics)
    step += 1
    epoch_end = (step - first_step) % steps_per_epoch == 0
    if step % t.log_every_steps == 0 or epoch_end or step == end:
      state_lib.check_finite(state, run.latest.latest_step())
      tic = _log_scalars(run, history, tic=tic, step=step, ps=ps, bar=bar)
      history = []
    epoch = (step - first_step) // steps_per_epoch
    stop = False
    if epoch_end and (epoch % t.eval_every_epochs == 0 or step == end):
      try:
        stop = _validate(run, state, step=step, epoch=epoch, ps=ps,
                         steps_per_epoch=steps_per_epoch)
      except interruption.EvalStopped:
        ps.pending_validation = step
        count_seconds()
        _save_and_stop(run, state, ps, step)
    ps.finetune_done = ps.finetune_done or stop
    if step % t.checkpoint_every_steps == 0 or epoch_end or step == end or stop:
      state_lib.check_finite(state, run.latest.latest_step())
      count_seconds()
      run.latest.save(step, state, ps.to_json())
    if run.stop.requested(step):
      count_seconds()
      _save_and_stop(run, state, ps, step)
    if stop:
      break
  return state


def _save_and_stop(run: _Run, state, ps, step: int) -> None:
  """Finishes the checkpoint in flight, saves `step`, raises Interrupted."""
  state_lib.check_finite(state, run.latest.latest_step())
  run.latest.wait()
  run.latest.save(step, state, ps.to_json())
  run.latest.wait()
  raise run.stop.interrupted(step, saved=True)


def _restore(run: _Run, state, checkpointer):
  """(state, PhaseState) of the newest checkpoint of `checkpointer` that
  restores (damaged ones are set aside), or (state, None) if there is none.
  """
  def like(meta):  # The state of the checkpoint's phase, its optimizer.
    ps = state_lib.PhaseState.from_json(meta, str(checkpointer.directory))
    tx = run.txs[ps.phase]
    if tx is state.tx:
      return state
    return state.replace(tx=tx, opt_state=jax.jit(tx.init)(state.params))

  found = checkpointer.restore_newest(like)
  if found is None:
    return state, None
  restored, meta, _ = found
  return restored, state_lib.PhaseState.from_json(meta)


def _start_finetune(run: _Run, state, ps: state_lib.PhaseState,
                    num_steps: int):
  """The best state with fine-tuning's optimizer (`optimizer_for_phase`);
  the step counter goes on from the end of training (the best state may be
  older), so logs and checkpoints of the two phases never mix. Updates `ps`
  in place; returns the state."""
  state, _ = _restore(run, state, run.best)
  tx = run.txs["finetune"]
  state = state.replace(
      step=state_lib.replicate(np.asarray(num_steps, np.int32), run.mesh),
      tx=tx, opt_state=jax.jit(tx.init)(state.params))
  target = ps.train_loss
  if run.config.train.finetune_rule == "authors":  # finetune.py.
    d = run.config.data
    target = run.loss_of_split(
        state, d.train_split,
        "fine" if d.train_labels == "fine" else "coarse", train_mode=False)
    log.info("finetune target (loss on %s, eval mode): %.4f", d.train_split,
             target)
  ps.phase, ps.target_loss, ps.finetune_start = "finetune", target, num_steps
  ps.epoch_losses, ps.epoch_accuracies = [], []
  return state


def _test_and_write(run: _Run, state, ps) -> dict:
  """Evaluates on the test split; writes results.json and the figures."""
  config = run.config
  test = run.eval_split(state, config.data.test_split, full=True,
                        num_samples=config.train.num_figures)
  step = int(jax.device_get(state.step))
  run.writer.write(step, "test", test.summary)
  results = {**test.to_json("test"), "validation": ps.best_validation,
             "selected_step": step,
             "best_validation": ps.best_metric,
             "dataset": run.builder.info.full_name,
             "machine": host.machine(),  # The tables' machine line.
             # What the run cost, all its parts (None: not counted).
             "train_seconds": (None if ps.train_seconds is None
                               else round(ps.train_seconds, 1)),
             # Whether it fits its training labels (the last epoch's).
             "train_accuracy": ps.train_accuracy,
             "config": config.to_dict()}
  if jax.process_index() == 0:
    root = filesystem.path(run.workdir)
    filesystem.write_json(root / "results.json", results)
    figures.save_all(run.workdir, test.samples,
                     writers.read_metrics(run.workdir),
                     config.model.num_classes, run.evaluator.class_names,
                     test.confusion)
  return results


def train_and_evaluate(resolved: config_validation.Resolved,
                       workdir: str) -> dict:
  """Trains, selects, (optionally) fine-tunes, tests; returns results.json.

  Args:
    resolved: `config_validation.resolve(config)`: the config, checked and
      completed, and the dataset's builder.
    workdir: where checkpoints, metrics, figures and results.json go; a
      workdir holding a run of this config resumes it.

  Raises:
    errors.Interrupted: SIGTERM / SIGINT stopped it (a checkpoint of the
      current step is saved; the same call resumes).
    errors.Error: anything else the user can fix (one line).
  """
  config, builder = resolved.config, resolved.builder
  if config.distributed:
    jax.distributed.initialize()
  with workdir_lib.claim(config, workdir):
    builder = datasets.prepare_on_hosts(builder, config.data,
                                        config.model.num_classes)
    # From here a signal is a stop request: it cannot be lost in library
    # code that catches KeyboardInterrupt while the run is set up.
    with interruption.StopRequest() as stop:
      t = config.train
      config_validation.check_dataset(config, builder)
      spe = input_pipeline.steps_per_epoch(builder, t.batch_size,
                                           config.data.train_split)
      num_steps = spe * t.num_epochs
      if t.max_steps:
        num_steps = min(num_steps, t.max_steps)
      run = _Run(config, workdir, builder, num_steps, stop)
      try:
        return _train_and_test(run, num_steps, spe)
      finally:
        run.close()


def _train_and_test(run: _Run, num_steps: int, spe: int) -> dict:
  """The phases of `train_and_evaluate`, from the newest checkpoint on."""
  config, t = run.config, run.config.train
  state = state_lib.create_train_state(config, run.model, run.mesh,
                                       config.data.crop_size,
                                       tx=run.txs["train"])
  state, ps = _restore(run, state, run.latest)
  if ps is None:
    ps = state_lib.PhaseState()
  else:
    step = int(jax.device_get(state.step))
    run.writer.drop_after(step)  # Logged after that checkpoint: redone.
    log.info("Resumed from step %d.", step)
  if run.stop.requested():  # While starting: nothing new to save.
    raise run.stop.interrupted(None, saved=False)
  if ps.phase == "train":
    state = _train_phase(run, state, ps, split=config.data.train_split,
                         first_step=0, num_steps=num_steps,
                         steps_per_epoch=spe)
  if t.finetune and not ps.finetune_done:
    if ps.phase != "finetune":
      state = _start_finetune(run, state, ps, num_steps)
    split = f"{config.data.train_split}+{config.data.eval_split}"
    ft_spe = input_pipeline.steps_per_epoch(run.builder, t.batch_size, split)
    state = _train_phase(
        run, state, ps, split=split, first_step=ps.finetune_start,
        num_steps=ft_spe * t.finetune_max_epochs, steps_per_epoch=ft_spe)
  elif run.best.latest_step() is not None:
    state, _ = _restore(run, state, run.best)
  try:
    return _test_and_write(run, state, ps)
  except interruption.EvalStopped:
    raise run.stop.interrupted(None, saved=False) from None
