"""The train state: creation, the optimizer, and the loop's phase state.

`create_train_state` initialises (or imports pretrained weights into) a
`TrainState` replicated over the mesh; `create_optimizer` builds its optax
chain from `config.train`; `restore_for_inference` loads a workdir's best or
latest state for evaluation and prediction. Nothing here runs the loop
(`train.py` does), so inference and reports need not import the trainer.

`PhaseState` is the loop's state between steps and phases (which phase,
the best validation score so far, the losses fine-tuning compares), a typed,
versioned dataclass saved as JSON with every checkpoint.
"""

import dataclasses
import functools
from typing import Any, ClassVar, Dict, List, Optional

from flax.training import train_state
import jax
from jax.sharding import NamedSharding, PartitionSpec as P
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from coarseseg_jax import checkpoints
from coarseseg_jax import errors
from coarseseg_jax import filesystem
from coarseseg_jax import models
from coarseseg_jax import sharding


class TrainState(train_state.TrainState):
  """Train state with BatchNorm statistics, an RNG and a non-finite guard.

  `nonfinite_step` is -1, or the first step whose loss was not finite; such a
  step leaves params, batch statistics and optimizer state unchanged, so no
  NaN ever reaches a checkpoint.
  """
  batch_stats: Any = None
  rng: Any = None
  nonfinite_step: Any = None


LR_SCHEDULES = ("constant", "warmup_cosine")


def learning_rate(train_config: ml_collections.ConfigDict,
                  total_steps: Optional[int] = None):
  """The learning rate: a float, or an optax schedule of the step.

  `train.lr_schedule`: "constant" (the paper's) or "warmup_cosine" (linear
  warmup over `train.warmup_steps` from 0, then cosine decay to 0 at
  `total_steps`).
  """
  t = train_config
  return _schedule(t.learning_rate, t.lr_schedule, t.warmup_steps,
                   total_steps)


def _schedule(lr, schedule: str, warmup_steps: int,
              total_steps: Optional[int]):
  """`learning_rate` of these values."""
  if schedule == "constant":
    return lr
  if schedule == "warmup_cosine":
    if not total_steps:
      raise ValueError("warmup_cosine needs the number of training steps.")
    return optax.warmup_cosine_decay_schedule(
        0.0, lr, int(warmup_steps), max(int(total_steps),
                                        int(warmup_steps) + 1))
  raise ValueError(f"unknown train.lr_schedule {schedule!r} "
                   f"({', '.join(LR_SCHEDULES)}).")


def create_optimizer(train_config: ml_collections.ConfigDict,
                     total_steps: Optional[int] = None,
                     constant: bool = False) -> optax.GradientTransformation:
  """Adam (or AdamW) with the configured schedule and gradient clipping.

  With the defaults (constant learning rate, no clipping) this is exactly
  `optax.adam(learning_rate)`, the paper's. `constant=True` ignores the
  schedule (fine-tuning's fresh optimizer).
  """
  t = train_config
  schedule = "constant" if constant else t.lr_schedule
  return _optimizer(
      t.optimizer, float(t.learning_rate), schedule, int(t.warmup_steps),
      None if schedule == "constant" else total_steps,
      float(t.weight_decay) if t.optimizer == "adamw" else None,
      float(t.grad_clip_norm or 0))


@functools.lru_cache(maxsize=16)
def _optimizer(name: str, lr: float, schedule: str, warmup_steps: int,
               total_steps: Optional[int], weight_decay: Optional[float],
               clip: float) -> optax.GradientTransformation:
  """`create_optimizer`'s chain, one object per settings in a process: a
  state's `tx` is part of the train step's cache key, so runs with the same
  settings reuse each other's compiled programs."""
  lr = _schedule(lr, schedule, warmup_steps, total_steps)
  if name not in ("adam", "adamw"):
    raise ValueError(f"unknown optimizer {name!r}")
  tx = (optax.adam(lr) if name == "adam"
        else optax.adamw(lr, weight_decay=weight_decay))
  if clip:
    tx = optax.chain(optax.clip_by_global_norm(clip), tx)
  return tx


def check_finite(state: TrainState, last_good: Optional[int]) -> None:
  """Raises NonFiniteLossError if a step of `state` was not finite."""
  bad = int(jax.device_get(state.nonfinite_step))
  if bad >= 0:
    kept = (f"the last good checkpoint (step {last_good}) is kept"
            if last_good is not None else "no checkpoint was written")
    raise errors.NonFiniteLossError(
        f"the training loss (or the update) became non-finite at step "
        f"{bad + 1}; stopping, its update was not applied. "
        f"{kept}. Try a lower learning rate or a smaller lambda.")


def replicate(tree, mesh):
  """Host values -> global arrays replicated over `mesh` (multi-host safe)."""
  replicated = NamedSharding(mesh, P())

  def put(x):
    x = np.asarray(x)
    return jax.make_array_from_callback(x.shape, replicated, lambda i: x[i])

  return jax.tree.map(put, tree)


def _init_compiler_options() -> Optional[Dict[str, Any]]:
  """XLA options of the `model.init` program: on CPU, no LLVM optimisation.

  The init program is mostly threefry random bits, run once per run: on CPU
  optimising it costs several times the compile of the unoptimised program
  and gives the same values up to float32 rounding (benchmarks/README.md,
  "Start-up and the compilation cache").
  """
  if jax.default_backend() == "cpu":
    return {"xla_backend_optimization_level": 0}
  return None


def create_train_state(config, model, mesh, image_size: int,
                       tx: Optional[optax.GradientTransformation] = None
                       ) -> TrainState:
  """Initialises (or imports pretrained weights into) a replicated state.

  `tx` defaults to `create_optimizer(config.train)` (a schedule then needs
  the step count: pass `tx` from the loop).
  """
  rng = jax.random.PRNGKey(config.seed)
  params_rng, state_rng = jax.random.split(rng)
  dummy = jnp.zeros((1, image_size, image_size, 3), jnp.float32)
  variables = _jitted_init(model)({"params": params_rng}, dummy)
  variables = jax.device_get(variables)
  if config.model.pretrained:
    try:
      variables = models.pretrained.load_pretrained(
          config.model.pretrained, config.model, variables)
    except (OSError, ValueError, ImportError) as e:
      message = " ".join(str(e).split())  # One line.
      raise errors.ConfigError(
          f"config.model.pretrained={config.model.pretrained}: "
          f"{message}") from None
  if tx is None:
    tx = create_optimizer(config.train, constant=True)
  return _jitted_make(model, tx, mesh)(
      replicate(variables, mesh), replicate(state_rng, mesh))


# One jitted function per model (and optimizer, mesh) in a process: runs of
# equal configs (`models.create_model`, `create_optimizer`) reuse programs.
@functools.lru_cache(maxsize=16)
def _jitted_init(model):
  return jax.jit(functools.partial(model.init, train=False),
                 compiler_options=_init_compiler_options())


@functools.lru_cache(maxsize=16)
def _jitted_make(model, tx, mesh):
  """The state of (variables, rng), replicated over `mesh`."""

  def make(variables, rng):
    # A strongly typed int32 step, as a restored one is (flax's is weakly
    # typed): fresh and resumed runs then compile one and the same train
    # step, and a resumed run loads it from the compilation cache.
    return TrainState.create(
        apply_fn=model.apply, params=variables["params"], tx=tx,
        batch_stats=variables.get("batch_stats", {}), rng=rng,
        nonfinite_step=jnp.array(-1, jnp.int32)).replace(
            step=jnp.array(0, jnp.int32))

  return jax.jit(make, out_shardings=NamedSharding(mesh, P()))


def variables(state: TrainState) -> Dict[str, Any]:
  """The model variables of a state (what `model.apply` takes)."""
  return {"params": state.params, "batch_stats": state.batch_stats}


@dataclasses.dataclass
class PhaseState:
  """The loop's state between steps and phases (saved with checkpoints).

  The training loop mutates the one instance of a run in place; no function
  returns it.

  Attributes:
    phase: "train" (model selection on validation) or "finetune".
    best_metric, best_step: the best validation score so far and its step.
    best_validation: that validation's whole summary (results.json's
      "validation").
    epoch_losses: training cross-entropies logged in the current epoch.
    epoch_accuracies: training accuracies logged in the current epoch (of
      the labelled pixels of the training labels, `step.py`).
    train_loss: the mean training cross-entropy of the last epoch.
    train_accuracy: the mean training accuracy of the last epoch (whether
      the model fits its training labels; results.json's
      "train_accuracy"), or None before an epoch ends after a start or a
      resume from a checkpoint written before it was kept.
    target_loss: fine-tuning stops once the validation cross-entropy is no
      higher (the last training epoch's `train_loss`).
    finetune_start: the global step fine-tuning started at.
    finetune_done: fine-tuning stopped early or ran out of epochs.
    pending_validation: the step whose validation an interruption cut
      short (it runs first on resume), or None.
    train_seconds: wall seconds the training loop (steps, validation,
      checkpoints) has run over all the run's parts, up to its last
      checkpoint; None when it resumed from a checkpoint written before
      they were counted.
  """
  VERSION: ClassVar[int] = 1
  phase: str = "train"
  best_metric: Optional[float] = None
  best_step: Optional[int] = None
  best_validation: Optional[Dict[str, float]] = None
  epoch_losses: List[float] = dataclasses.field(default_factory=list)
  epoch_accuracies: List[float] = dataclasses.field(default_factory=list)
  train_loss: Optional[float] = None
  train_accuracy: Optional[float] = None
  target_loss: Optional[float] = None
  finetune_start: Optional[int] = None
  finetune_done: bool = False
  pending_validation: Optional[int] = None
  train_seconds: Optional[float] = 0.0

  def count_seconds(self, seconds: float) -> None:
    """Adds `seconds` of training to `train_seconds` (unless uncounted)."""
    if self.train_seconds is not None:
      self.train_seconds += seconds

  def to_json(self) -> Dict[str, Any]:
    return {"version": self.VERSION, **dataclasses.asdict(self)}

  @classmethod
  def from_json(cls, data: Optional[Dict[str, Any]], where: str = "checkpoint"
                ) -> "PhaseState":
    """From checkpoint JSON: this version, or the untyped dict of version 0.

    Raises:
      errors.CheckpointError: a newer version, or unknown fields.
    """
    data = dict(data or {})
    if data and "train_seconds" not in data:  # Written before they counted.
      data["train_seconds"] = None
    version = int(data.pop("version", 0))
    if version > cls.VERSION:
      raise errors.CheckpointError(
          f"{where} was written by a newer coarseseg-jax (phase state "
          f"version {version} > {cls.VERSION}); update the code to resume it.")
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - fields)
    if unknown:
      raise errors.CheckpointError(
          f"{where} holds phase state fields {unknown} this version does not "
          "know; resume it with the version that wrote it, or start a new "
          "--workdir.")
    return cls(**data)


PHASES = ("train", "finetune")


def optimizer_for_phase(train_config: ml_collections.ConfigDict, phase: str,
                        total_steps: Optional[int] = None
                        ) -> optax.GradientTransformation:
  """THE optimizer of a phase: "train" uses the configured learning-rate
  schedule over `total_steps` (`create_optimizer`); "finetune" starts a
  fresh Adam at the constant learning rate (the paper's fine-tuning).

  `total_steps=None` is for restoring a state to evaluate it, where only the
  optimizer state's structure matters (a schedule's length does not change
  it): a schedule that needs a length gets the shortest valid one.
  """
  if phase == "finetune":
    return create_optimizer(train_config, constant=True)
  if phase != "train":
    raise ValueError(f"phase={phase!r} is not one of {PHASES}.")
  if total_steps is None:
    total_steps = int(train_config.warmup_steps) + 1
  return create_optimizer(train_config, total_steps=total_steps)


def data_seed(seed: int, phase: str) -> int:
  """The seed of a phase's data order and augmentation: fine-tuning draws
  another order than training (the run's seed + 1)."""
  return seed + (1 if phase == "finetune" else 0)


def restore_for_inference(config, workdir: str, which: str = "best"):
  """Restores the `best` (falling back to `latest`) or `latest` state, or
  (``which="pretrained"``) the weights `config.model.pretrained` names, e.g.
  an authors' checkpoint (`pretrained_format="authors"`), at step 0 (the
  config resolved by the caller: `config_validation.resolve` completes its
  number of classes).

  Returns `(state, model, mesh, step)`.

  Raises:
    errors.CheckpointError: no checkpoint in the workdir, the checkpoint
      does not restore (one line naming it), or no `config.model.pretrained`
      for ``which="pretrained"``.
  """
  mesh = sharding.make_mesh()
  if which == "pretrained":
    if not config.model.pretrained:
      raise errors.CheckpointError(
          "--checkpoint=pretrained evaluates the weights of "
          "--config.model.pretrained=PATH (with --config.model."
          "pretrained_format=authors for the authors' SegModel): pass it.")
    model = models.create_model(config.model)
    return (create_train_state(config, model, mesh, config.data.crop_size),
            model, mesh, 0)
  model = models.create_model(config.model)
  root = filesystem.path(workdir)
  order = ("best", "checkpoints") if which == "best" else ("checkpoints",)
  for sub in order:
    if not filesystem.is_url(root) and not (root / sub).exists():
      continue  # Creates no local folder (nor orbax's cleanup thread).
    ckpt = checkpoints.Checkpointer(root / sub, 1)
    step = ckpt.latest_step()
    if step is not None:
      where = root / sub / str(step)
      # A damaged checkpoint is one line; it is left where it is (training,
      # which resumes from the newest that restores, sets it aside).
      advice = (f"rename it to {where.name}.corrupt to use "
                + ("the latest checkpoint under checkpoints/" if sub == "best"
                   else "the previous checkpoint")
                + ", or train again.")
      try:
        with checkpoints.reported_as_damaged(where, advice):
          meta = ckpt.read_meta(step)
        phase = PhaseState.from_json(meta, str(root / sub))
        tx = optimizer_for_phase(config.train, phase.phase)
        like = create_train_state(config, model, mesh, config.data.crop_size,
                                  tx=tx)
        with checkpoints.reported_as_damaged(where, advice):
          state, _ = ckpt.restore(like, step)
      finally:
        ckpt.close()
      return state, model, mesh, int(jax.device_get(state.step))
    ckpt.close()
  raise errors.CheckpointError(
      f"no checkpoint under {root / order[0]}: train first "
      "(--mode=train) with this --workdir.")
