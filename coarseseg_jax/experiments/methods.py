"""What the experiments run: setups, and methods as named config deltas.

A run of an experiment is a base config (a config file with command-line
overrides) plus the method's delta, the swept values and the seed, all as
dotted config keys. So every cell of a table is one command of
`coarseseg_jax.main`, which `command_line` prints and each run's record
keeps, e.g.

  python -m coarseseg_jax.main --config=configs/synthetic.py \
      --config.data.builder_kwargs.num_train=200 ... \
      --config.train.lmbda=0.025 --config.seed=1 \
      --workdir=workdirs/experiments/synthetic/main/hcfcn_slic/lmbda0.025/seed1

`FULL_SYNTHETIC` sizes the default experiment (the synthetic dataset, 160
px, a half-width encoder, 25 epochs; docs/experiments.md gives run times);
with `--config` the sizes are the config's. `QUICK` shrinks any config for
the tests (a tiny model, 1 epoch; tiny synthetic data).
"""

import dataclasses
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

import ml_collections

from coarseseg_jax.configs import default as default_config
from coarseseg_jax.configs import synthetic
from coarseseg_jax.configs import texture_mosaic

Delta = Dict[str, Any]  # Dotted config key -> value.

# The `_dot` methods of the main table are the authors' code
# (`configs/default.py`: AUTHORS_CODE, docs/differences.md, "Differences from the authors'
# code"): their model, loss and validation pass on the same data and test
# protocol, at the EXPERIMENT's model size (FULL: encoder width 32, 32
# similarity features, half the authors'; `model.sim_features` stays the
# experiment's).
_AUTHORS: Delta = {**{k: v for k, v in default_config.AUTHORS_CODE.items()
                      if k != "model.sim_features"},
                   "model.assign_init": "default", "model.parent_bias": None}
# The `_authors` methods: the authors' code at the AUTHORS' size, whatever
# the base config's: their full-width truncated ResNet-34 (width 64, blocks
# (3, 4, 6), FCN head 4 * 64 -> 64 channels) and 48 similarity features
# (their `SegModel(ResNet34Encoder(), FCNHead(256, C), HCDecoder(0.07, 48))`).
AUTHORS_SIZE: Delta = {"model.width": 64, "model.head_channels": 64,
                       "model.stage_blocks": (3, 4, 6),
                       "model.sim_features": 48}


@dataclasses.dataclass(frozen=True)
class Method:
  """A row of the main table: what it changes and what it needs.

  delta: dotted config overrides of the base config.
  sweeps: the parameter it chooses on the selection seeds ("lmbda" |
    "kappa", `PARAM_KEYS`), or None.
  takes: parameters it takes from the methods that sweep them.
  refined_from: the method whose run of the same seed refines its training
    labels (`--mode=refine`); the runner adds data.refined_dir
    (`<that run's workdir>/<refined_subdir>`), and the tables compare the two.
  refined_subdir: the folder of that run's workdir the refine output goes
    to (one per learner, so that no refine output changes under a finished
    run that learned from it).
  against: more methods the tables compare it with (when they ran).
  """
  delta: Delta = dataclasses.field(default_factory=dict)
  sweeps: Optional[str] = None
  takes: Tuple[str, ...] = ()
  refined_from: Optional[str] = None
  refined_subdir: str = "refined_train"
  against: Tuple[str, ...] = ()

  def needs(self) -> Tuple[str, ...]:
    """The methods this one cannot run without (sorted)."""
    needed = {SWEEPER[p] for p in self.takes}
    if self.refined_from:
      needed.add(self.refined_from)
    return tuple(sorted(needed))


METHODS: Dict[str, Method] = {
    "fcn": Method({"model.name": "fcn"}),
    "hcfcn": Method(),
    "hcfcn_slic": Method(sweeps="lmbda"),
    # Self-training: hcfcn_slic on the train labels that the same seed's
    # hcfcn_slic run refined.
    "hcfcn_slic_refined": Method({"data.train_labels": "refined"},
                                 takes=("lmbda",), refined_from="hcfcn_slic"),
    # The same, on the free fill (no model) of those labels that the refine
    # report's coarse-only score ranks first: is the model's fill worth it?
    "hcfcn_slic_refined_free": Method(
        {"data.train_labels": "refined", "data.refined_fill": "best_free"},
        takes=("lmbda",), refined_from="hcfcn_slic",
        refined_subdir="refined_train_free", against=("hcfcn_slic_refined",)),
    "unet": Method({"model.name": "unet"}),
    "hcfcn_fine": Method({"data.train_labels": "fine"}),
    "hcfcn_slic_propagated": Method(
        {"data.train_labels": "slic_propagated"}),
    "hcfcn_slicmap": Method(sweeps="kappa"),
    "hcfcn_slicmap_slic": Method(takes=("kappa", "lmbda")),
    "hcfcn_dot": Method(dict(_AUTHORS)),
    "hcfcn_dot_slic": Method(dict(_AUTHORS), takes=("lmbda",)),
    "hcfcn_authors": Method({**_AUTHORS, **AUTHORS_SIZE}),
    "hcfcn_authors_slic": Method({**_AUTHORS, **AUTHORS_SIZE},
                                 takes=("lmbda",)),
}
MAIN_METHODS = tuple(METHODS)
# Swept parameter -> the method that sweeps it.
SWEEPER = {m.sweeps: name for name, m in METHODS.items() if m.sweeps}
REFERENCE = "hcfcn"  # The t-tests compare every method with this one...
SECOND_REFERENCE = "fcn"  # ... and with FCN-16.
REFINED_SUBDIR = Method.refined_subdir  # hcfcn_slic_refined's.
PARAM_KEYS = {"lmbda": "train.lmbda", "kappa": "train.kappa",
              "kernel": "data.coarse_kernel", "epochs": "train.num_epochs"}

# Similarity options of HCFCN-16's assignments, run by
# `--experiment=similarity` with the regularizer, chosen on validation.
SIMILARITY_OPTIONS: Dict[str, Delta] = {
    "dot": {"model.similarity": "dot", "model.tau": 0.07},
    "cosine": {"model.similarity": "cosine", "model.tau": 0.07},
    "cosine_t0.05": {"model.similarity": "cosine", "model.tau": 0.05},
    "cosine_t0.1": {"model.similarity": "cosine", "model.tau": 0.1},
    "cosine_pb2": {"model.similarity": "cosine", "model.tau": 0.07,
                   "model.parent_bias": 2.0},
    "dot_zero_pb2": {"model.similarity": "dot", "model.tau": 0.07,
                     "model.assign_init": "zero", "model.parent_bias": 2.0},
    "hcformer": {"model.similarity": "hcformer", "model.tau": 0.05},
}


# The budget experiment (`designs.run_budget`): these methods (default), each
# at every epoch budget of `Setup.budgets` on selection seeds, every run with
# a learning rate that decays to 0 at its own last step (`train.lr_schedule`
# warmup_cosine, without warmup).
BUDGET_METHODS = ("fcn", "hcfcn", "hcfcn_slic")
BUDGET_DELTA: Delta = {"train.lr_schedule": "warmup_cosine"}


def budget_params(method: str, setup: "Setup") -> Dict[str, float]:
  """The fixed values a method's budget runs take for what the main table
  sweeps (`Setup.budget_lambda`, `budget_kappa`), e.g. {"lmbda": 0.05}."""
  spec = METHODS[method]
  fixed = {"lmbda": setup.budget_lambda, "kappa": setup.budget_kappa}
  return {p: fixed[p] for p in ((spec.sweeps,) if spec.sweeps else ())
          + spec.takes}


# Seeds: reported runs use 0, 1, ... (`report_seeds`); every selection (the
# lambda / kappa sweeps, the similarity experiment) uses SELECTION_SEED,
# SELECTION_SEED + 1, ... (`selection_seeds`), so no reported run is one that
# chose a setting.
SELECTION_SEED = 100


@dataclasses.dataclass(frozen=True)
class Setup:
  """The grids and seeds of the experiments (sizes are config overrides)."""
  seeds: int            # Main table (reported seeds 0..seeds-1).
  coarseness_seeds: int
  similarity_seeds: int  # Selection seeds of the similarity experiment.
  sweep_seeds: int      # Selection seeds of the lambda / kappa sweeps.
  widen_limit: int      # Values a sweep may add beyond its grid's edges.
  lambdas: Tuple[float, ...]
  kappas: Tuple[float, ...]
  kernels: Tuple[int, ...]
  coarseness_lambda: float
  similarity_lambda: float  # lambda of the similarity sweep's runs.
  figure_images: int    # Test images in the prediction figure.
  budgets: Tuple[int, ...] = ()  # Epoch budgets of the budget experiment.
  budget_seeds: int = 1  # Its selection seeds.
  budget_lambda: float = 0.05  # lambda / kappa of its runs that take one.
  budget_kappa: float = 0.025


FULL = Setup(seeds=5, coarseness_seeds=5, similarity_seeds=2, sweep_seeds=2,
             widen_limit=2, lambdas=(0.025, 0.05, 0.075, 0.1),
             kappas=(0.01, 0.025, 0.05, 0.1), kernels=(1, 5, 10, 15, 20, 25),
             coarseness_lambda=0.05, similarity_lambda=0.025,
             figure_images=3, budgets=(25, 50, 100, 200), budget_seeds=2)
# One value per sweep: each lambda / kappa value is one more compilation.
QUICK = Setup(seeds=2, coarseness_seeds=2, similarity_seeds=1, sweep_seeds=1,
              widen_limit=2, lambdas=(0.05,), kappas=(0.05,), kernels=(3, 7),
              coarseness_lambda=0.05, similarity_lambda=0.05,
              figure_images=2, budgets=(1, 2), budget_seeds=1)

# The default experiment: configs/synthetic.py (or configs/texture_mosaic.py,
# whose generator takes the same parameters) sized for a 2-core CPU.
# Images of at least 144 px: below a 200 px diagonal the paper's boundary
# recall has tolerance 0 and is 0 for any prediction. 160 px with kernel 15
# leaves about as much labelled as the paper's 25 at 256 px; 200/40/100
# images; a half-width ResNet-34 encoder; 25 epochs (625 steps of 8).
FULL_SYNTHETIC: Delta = {
    "data.builder_kwargs.num_train": 200,
    "data.builder_kwargs.num_validation": 40,
    "data.builder_kwargs.num_test": 100,
    "data.builder_kwargs.image_size": 160,
    "data.crop_size": 160, "data.coarse_kernel": 15,
    "data.slic_num_segments": 200, "data.shuffle_buffer": 200,
    "model.width": 32, "model.head_channels": 32, "model.sim_features": 32,
    "train.num_epochs": 25, "train.eval_every_epochs": 5,
    "train.log_every_steps": 10, "train.checkpoint_every_steps": 50,
    "train.num_figures": FULL.figure_images,
}
# --quick, for any config: a tiny model and one epoch.
QUICK_ANY: Delta = {
    "model.width": 8, "model.head_channels": 8, "model.sim_features": 8,
    "model.stage_blocks": (1, 1, 1), "train.num_epochs": 1,
    "train.eval_every_epochs": 1, "train.log_every_steps": 10,
    "train.checkpoint_every_steps": 50, "train.num_figures":
        QUICK.figure_images,
}
# --quick on a generated dataset (synthetic, texture_mosaic): also tiny data.
QUICK_SYNTHETIC: Delta = {
    **QUICK_ANY,
    "data.builder_kwargs.num_train": 16,
    "data.builder_kwargs.num_validation": 4,
    "data.builder_kwargs.num_test": 4,
    "data.builder_kwargs.image_size": 64,
    "data.crop_size": 64, "data.coarse_kernel": 7,
    "data.slic_num_segments": 64, "data.shuffle_buffer": 16,
}


def apply(config: ml_collections.ConfigDict, delta: Mapping[str, Any]
          ) -> ml_collections.ConfigDict:
  """A copy of `config` with the dotted keys of `delta` set."""
  config = ml_collections.ConfigDict(config.to_dict())
  for key, value in delta.items():
    *parents, leaf = key.split(".")
    node = config
    for part in parents:
      node = node[part]
    node[leaf] = value
  return config


# The datasets the code generates: `--dataset=` without a config file.
GENERATED = {"synthetic": synthetic, "texture_mosaic": texture_mosaic}


def generated_base(dataset: str, *, quick: bool = False,
                   num_epochs: Optional[int] = None, cosine: bool = False,
                   data_dir: Optional[str] = None
                   ) -> Tuple[ml_collections.ConfigDict, Delta]:
  """(base config, its overrides) of `--dataset=<dataset>`, unresolved.

  `FULL_SYNTHETIC` (`QUICK_SYNTHETIC` if quick) on the generated dataset's
  config, then `with_flags`. `results/convergence/commands.sh` builds the
  runs it reuses from it, so they are the runs the CLI would make.
  """
  overrides = dict(QUICK_SYNTHETIC if quick else FULL_SYNTHETIC)
  return with_flags(GENERATED[dataset].get_config(), overrides, num_epochs,
                    cosine, data_dir), overrides


def with_flags(base: ml_collections.ConfigDict, overrides: Delta,
               num_epochs: Optional[int] = None, cosine: bool = False,
               data_dir: Optional[str] = None) -> ml_collections.ConfigDict:
  """A copy of `base` with `overrides` and the experiments CLI's run flags
  (which `overrides` gains: --num_epochs, --cosine as `BUDGET_DELTA`,
  --data_dir); the entry point resolves it (`config_validation.resolve`)."""
  if data_dir:
    overrides["data.data_dir"] = data_dir
  if num_epochs:
    overrides["train.num_epochs"] = num_epochs
  if cosine:
    overrides.update(BUDGET_DELTA)
  return apply(base, overrides)


def report_seeds(n: int) -> Tuple[int, ...]:
  """The seeds of n reported runs: 0..n-1 (below SELECTION_SEED)."""
  if not 1 <= n <= SELECTION_SEED:
    raise ValueError(f"{n} reported seeds: use 1 to {SELECTION_SEED} (seeds "
                     f"from {SELECTION_SEED} on are for selection).")
  return tuple(range(n))


def selection_seeds(n: int) -> Tuple[int, ...]:
  """The seeds of n selection runs: SELECTION_SEED, SELECTION_SEED + 1, ..."""
  if n < 1:
    raise ValueError(f"{n} selection seeds: use at least 1.")
  return tuple(range(SELECTION_SEED, SELECTION_SEED + n))


def widen(grid: Sequence[float], side: str, digits: int = 3
          ) -> Optional[float]:
  """The next value beyond the `side` ('low' | 'high') edge of `grid`.

  The edge times its ratio to its neighbour (a geometric step: 0.025, 0.05
  -> 0.0125 below), rounded to `digits` significant digits; an arithmetic
  step (edge - neighbour) where the neighbour is 0. None when the grid has
  fewer than 2 values or the low edge is 0 (weights are >= 0).
  """
  if side not in ("low", "high"):
    raise ValueError(f"side={side!r} must be 'low' or 'high'.")
  g = sorted(float(v) for v in grid)
  if len(g) < 2:
    return None
  edge, neighbour = (g[0], g[1]) if side == "low" else (g[-1], g[-2])
  if edge <= 0:
    return None
  value = edge * edge / neighbour if neighbour > 0 else 2 * edge - neighbour
  for d in range(digits, 17):  # Enough digits to stay beyond the edge.
    rounded = float(f"{value:.{d}g}")
    if (rounded < edge) if side == "low" else (rounded > edge):
      return rounded
  return value


def grid(setup: Setup, param: str) -> Tuple[float, ...]:
  """The setup's grid of a swept parameter ("lmbda" | "kappa")."""
  return {"lmbda": setup.lambdas, "kappa": setup.kappas}[param]


def num_runs(experiment: str, setup: Setup, names: Sequence[str], seeds: int,
             options: int) -> int:
  """Runs of one pass of `experiment` (main: sweeps without widening)."""
  if experiment == "main":
    grids = [grid(setup, METHODS[m].sweeps) for m in names
             if METHODS[m].sweeps]
    swept = sum(len(g) for g in grids if len(g) > 1)
    return len(names) * seeds + swept * setup.sweep_seeds
  if experiment == "budget":
    return len(names) * seeds * len(setup.budgets)
  return seeds * (2 * len(setup.kernels) if experiment == "coarseness"
                  else options)


def param_name(params: Mapping[str, Any]) -> str:
  """Workdir name of a run's swept values, e.g. `kernel5_lmbda0.05`,
  `epochs50_lmbda0.05` or `ce`."""
  parts = [f"{k}{params[k]:g}" for k in ("epochs", "kernel", "kappa",
                                         "lmbda") if params.get(k)]
  if params.get("option"):
    parts.insert(0, str(params["option"]))
  return "_".join(parts) or "ce"


def run_delta(method: str, params: Mapping[str, Any], seed: int) -> Delta:
  """The dotted overrides of one run on top of the base config."""
  if method not in METHODS:
    raise ValueError(f"unknown method {method!r}; choose from {MAIN_METHODS}.")
  delta: Delta = {"train.lmbda": 0.0, "train.kappa": 0.0}
  delta.update(METHODS[method].delta)
  for name, value in params.items():
    if name == "option":
      delta.update(SIMILARITY_OPTIONS[value])
    else:
      delta[PARAM_KEYS[name]] = value
  delta["seed"] = seed
  return delta


def _flag_value(value: Any) -> str:
  if isinstance(value, (tuple, list)):
    return "'(" + ",".join(str(v) for v in value) + ("," if len(value) == 1
                                                     else "") + ")'"
  return str(value)


def command_line(config_file: str, base_overrides: Mapping[str, Any],
                 delta: Mapping[str, Any], workdir: str) -> str:
  """The `coarseseg_jax.main` command that trains this run alone."""
  merged = dict(base_overrides)
  merged.update(delta)
  args = [f"--config.{k}={_flag_value(v)}" for k, v in merged.items()
          if v is not None]
  return " ".join(["python -m coarseseg_jax.main", f"--config={config_file}"]
                  + args + [f"--workdir={workdir}"])


def budget_methods(names: Optional[Sequence[str]]) -> Tuple[str, ...]:
  """The budget experiment's methods: `names` in table order, exactly (its
  table runs no t-tests, so no reference is added), or `BUDGET_METHODS`;
  ValueError for an unknown one or one that learns from refined labels."""
  if not names:
    return BUDGET_METHODS
  chosen = select_methods(names)
  refined = [m for m in chosen if METHODS[m].refined_from]
  if refined:
    raise ValueError(f"{', '.join(refined)} learns from refined labels; the "
                     "budget experiment runs no refine step: leave it out.")
  return tuple(m for m in MAIN_METHODS if m in names)


def select_methods(names: Sequence[str]) -> Tuple[str, ...]:
  """The main experiment's methods among `names` (None: all), in the order
  they are trained: `names`' order, each after the methods it needs
  (`Method.needs`; ValueError when `names` lacks one), and `hcfcn`, the
  reference of the t-tests, always included (last unless named). Tables
  list them in table order, `MAIN_METHODS`'.
  """
  if not names:
    return MAIN_METHODS
  unknown = sorted(set(names) - set(MAIN_METHODS))
  if unknown:
    raise ValueError(f"Unknown methods {unknown}; choose from {MAIN_METHODS}.")
  for name in names:
    needs = METHODS[name].needs()
    if not set(needs) <= set(names):
      raise ValueError(f"{name} needs {' and '.join(needs)} (the values "
                       "they sweep, or the labels they refine).")
  ordered = []
  def add(name):
    if name not in ordered:
      for need in METHODS[name].needs():
        add(need)
      ordered.append(name)
  for name in list(names) + [REFERENCE]:
    add(name)
  return tuple(ordered)
