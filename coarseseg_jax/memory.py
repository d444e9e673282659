"""Memory of the compiled train step per device, before a run.

`train_step_memory(config)` lowers and compiles the train step exactly as
training builds it (`step.train_step`, the state donated, the batch sharded
over a 1-D `data` mesh of every device, parameters replicated) on abstract
inputs (`jax.ShapeDtypeStruct`s from `jax.eval_shape`: nothing is
initialised, no step runs) and reads XLA's memory analysis of the compiled
program. `format_memory` turns the figures into the lines `--mode=summary`
prints.

What the figures are (XLA's `CompiledMemoryStats`, per device, bytes):
  arguments:   the state (parameters, Adam's two moments, batch statistics)
               and this device's share of the batch;
  outputs:     the new state and the step's scalar metrics;
  aliased:     outputs written into donated argument buffers (the state is
               donated, so the new state reuses the old one's memory);
  temporaries: everything else live during the step (activations kept for
               the backward pass, gradients, XLA's scratch buffers);
  total:       arguments + outputs - aliased + temporaries, the peak the
               program needs.
Batch entries the step does not read (`label_fine`, `mask`; `slic` when
kappa = 0) are pruned from the program and not counted, though training
puts them on the device with the batch (4 bytes a pixel each; `mask` one
float per image). The figures are the compiler's plan for the backend it compiled for: a GPU or TPU
compiles other fusions and convolution algorithms (cuDNN workspaces), so
read the CPU figures as an estimate of a GPU's (benchmarks/README.md,
"Memory per device before a run"). Compiling the default model at 512 x 512
takes about a minute on 2 CPU cores.
"""

import dataclasses
import time
from typing import Any, Dict, Optional, Tuple

import jax
import jax.numpy as jnp
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
import ml_collections

from coarseseg_jax import config_validation
from coarseseg_jax import errors
from coarseseg_jax import models
from coarseseg_jax import sharding
from coarseseg_jax import state as state_lib
from coarseseg_jax import step as step_lib

MiB = 2**20


@dataclasses.dataclass(frozen=True)
class StepMemory:
  """XLA's memory analysis of the compiled train step, per device.

  Attributes:
    backend, device_kind: where it was compiled (`jax.default_backend()`,
      the first device's kind).
    num_devices: devices of the mesh the batch is split over.
    global_batch, per_device_batch: images per step, in all and per device.
    image_size: side of the square training crop (`data.crop_size`).
    dtype: the model's computation dtype (`model.dtype`).
    argument_bytes, output_bytes, alias_bytes, temp_bytes: see the module
      docstring; `generated_code_bytes` the program's code.
    compile_seconds: lowering and compiling time (a persistent-cache hit
      makes it short).
  """
  backend: str
  device_kind: str
  num_devices: int
  global_batch: int
  per_device_batch: int
  image_size: int
  dtype: str
  argument_bytes: int
  output_bytes: int
  alias_bytes: int
  temp_bytes: int
  generated_code_bytes: int
  compile_seconds: float

  @property
  def total_bytes(self) -> int:
    """Arguments + outputs - aliased + temporaries: the step's peak."""
    return (self.argument_bytes + self.output_bytes - self.alias_bytes
            + self.temp_bytes)


def _check(config: ml_collections.ConfigDict, num_devices: int) -> None:
  """One-line ConfigError for what would fail inside the compiler."""
  if config.model.num_classes is None:
    raise errors.ConfigError(
        "config.model.num_classes is not set (config_validation."
        "resolve sets the dataset's); pass "
        "--config.model.num_classes=N.")
  config_validation.check_sizes(config, num_devices, ("train.batch_size",))


def abstract_train_state(config: ml_collections.ConfigDict, mesh: Mesh,
                         total_steps: int = 1_000_000
                         ) -> state_lib.TrainState:
  """The `TrainState` of `config` as ShapeDtypeStructs replicated over `mesh`.

  Shapes and dtypes come from `jax.eval_shape` of the model's
  initialisation and the optimizer's (nothing is computed). `total_steps`
  only shapes a warmup-cosine schedule (not the memory).
  """
  model = models.create_model(config.model)
  tx = state_lib.create_optimizer(config.train, total_steps=total_steps)
  size = config.data.crop_size

  def make():
    variables = model.init({"params": jax.random.key(0)},
                           jnp.zeros((1, size, size, 3), jnp.float32),
                           train=False)
    return state_lib.TrainState.create(
        apply_fn=model.apply, params=variables["params"], tx=tx,
        batch_stats=variables.get("batch_stats", {}),
        rng=jax.random.PRNGKey(0), nonfinite_step=jnp.array(-1, jnp.int32))

  replicated = NamedSharding(mesh, P())
  return jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=replicated),
      jax.eval_shape(make))


def abstract_train_batch(global_batch: int, image_size: int, mesh: Mesh
                         ) -> Dict[str, jax.ShapeDtypeStruct]:
  """A global training batch as ShapeDtypeStructs split over `mesh`.

  The keys and dtypes `input_pipeline.create_train_iterator` yields (after
  `sharding.shard_batch`): `image` (B, S, S, 3) float32, `label`,
  `label_fine`, `slic` (B, S, S) int32, `mask` (B,) float32.
  """
  split = NamedSharding(mesh, P("data"))
  b, s = global_batch, image_size

  def spec(shape, dtype):
    return jax.ShapeDtypeStruct(shape, dtype, sharding=split)

  return {"image": spec((b, s, s, 3), jnp.float32),
          "label": spec((b, s, s), jnp.int32),
          "label_fine": spec((b, s, s), jnp.int32),
          "slic": spec((b, s, s), jnp.int32),
          "mask": spec((b,), jnp.float32)}


def abstract_train_inputs(config: ml_collections.ConfigDict,
                          mesh: Optional[Mesh] = None
                          ) -> Tuple[Any, Dict[str, jax.ShapeDtypeStruct]]:
  """(abstract state, abstract batch) of `config`'s train step on `mesh`.

  `mesh` defaults to `sharding.make_mesh()` (every device). Raises
  errors.ConfigError (one line) for a config the step cannot be built for.
  """
  mesh = sharding.make_mesh() if mesh is None else mesh
  _check(config, mesh.size)
  try:
    state = abstract_train_state(config, mesh)
  except ValueError as e:  # create_model's and the models' one-line errors.
    raise errors.ConfigError(f"config.model: {e}") from None
  return (state,
          abstract_train_batch(config.train.batch_size,
                               config.data.crop_size, mesh))


def train_step_memory(config: ml_collections.ConfigDict,
                      mesh: Optional[Mesh] = None) -> StepMemory:
  """Compiles `config`'s train step on abstract inputs; its memory per device.

  Args:
    config: a full config (`configs/default.py`), `model.num_classes` set.
    mesh: the data-parallel mesh; default every device
      (`sharding.make_mesh()`), as training uses.

  Returns:
    a `StepMemory` for the current backend.

  Raises:
    errors.ConfigError: num_classes unset, a crop size that is not a
      multiple of 16, a batch size that does not divide over the devices, or
      a model / loss option the model or the loss refuses (one line).
    RuntimeError: the backend has no memory analysis.
  """
  mesh = sharding.make_mesh() if mesh is None else mesh
  state, batch = abstract_train_inputs(config, mesh)
  t0 = time.perf_counter()
  try:
    lowered = step_lib.make_train_step(config).lower(state, batch)
  except ValueError as e:  # The models' and losses' one-line config errors.
    raise errors.ConfigError(
        f"the train step of this config cannot be built: {e}") from None
  compiled = lowered.compile()
  seconds = time.perf_counter() - t0
  stats = compiled.memory_analysis()
  if stats is None:
    raise RuntimeError(f"the {jax.default_backend()} backend gives no memory "
                       "analysis of compiled programs.")
  n = mesh.size
  return StepMemory(
      backend=jax.default_backend(),
      device_kind=mesh.devices.flat[0].device_kind,
      num_devices=n, global_batch=config.train.batch_size,
      per_device_batch=config.train.batch_size // n,
      image_size=config.data.crop_size,
      dtype=str(config.model.dtype),
      argument_bytes=int(stats.argument_size_in_bytes),
      output_bytes=int(stats.output_size_in_bytes),
      alias_bytes=int(stats.alias_size_in_bytes),
      temp_bytes=int(stats.temp_size_in_bytes),
      generated_code_bytes=int(stats.generated_code_size_in_bytes),
      compile_seconds=seconds)


def format_memory(m: StepMemory) -> str:
  """The lines `--mode=summary` prints for a `StepMemory` (MiB = 2^20 B)."""
  def mib(x):
    return f"{x / MiB:10.1f} MiB"
  devices = f"{m.num_devices} device" + ("s" if m.num_devices > 1 else "")
  return "\n".join([
      f"train step memory per device (XLA memory analysis, {m.backend} "
      f"backend, {devices} of kind {m.device_kind!r}; {m.dtype}, "
      f"{m.image_size}x{m.image_size} crops; compiled in "
      f"{m.compile_seconds:.1f} s):",
      f"  arguments   {mib(m.argument_bytes)}  (state + batch share)",
      f"  outputs     {mib(m.output_bytes)}  (new state + metrics)",
      f"  aliased     {mib(m.alias_bytes)}  (outputs in donated inputs)",
      f"  temporaries {mib(m.temp_bytes)}  (activations, gradients, "
      "scratch)",
      f"  total       {mib(m.total_bytes)}  (arguments + outputs - aliased "
      "+ temporaries)",
      f"batch: global {m.global_batch}, per device {m.per_device_batch} "
      f"({devices})",
  ])
