r"""Evaluation of photos of many sizes: seconds and XLA programs built.

  python benchmarks/eval_sizes.py [--images=40 --sizes=20 --repeats=2]

Writes a `folder` dataset (its real on-disk format: PNG images and label
PNGs) whose test split holds `--images` synthetic photos of `--sizes`
distinct sizes between 96 and 320 px, prepares it, and evaluates an
untrained HCFCN-16 of the experiments' FULL size (width 32, ResNet-34 blocks
3, 4, 6, no DCN) on that split with `full=True` (every metric, SLIC ASA
included), as `--mode=eval` does. Prints, for the first evaluation (cold:
everything compiled) and the following ones (warm), the wall time and the
number of XLA programs built (compiled, or loaded from JAX's persistent
cache, which is off here).

It runs on the evaluation API of before and after issue 13 alike (the
"before" figures in benchmarks/README.md come from running this file with
PYTHONPATH pointing at a checkout of 47c630d).
"""

import argparse
import os
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))  # benchmarks/: timing.py
sys.path[:0] = [os.path.dirname(HERE), HERE]

from coarseseg_jax import xla_flags  # pylint: disable=unused-import,g-bad-import-order

import jax  # pylint: disable=g-import-not-at-top
import ml_collections
import numpy as np
from PIL import Image
import timing  # benchmarks/timing.py  # pylint: disable=g-import-not-at-top

from coarseseg_jax import datasets  # pylint: disable=g-import-not-at-top
from coarseseg_jax import evaluate
from coarseseg_jax import input_pipeline
from coarseseg_jax import models
from coarseseg_jax import sharding
from coarseseg_jax import state as state_lib
from coarseseg_jax import train
from coarseseg_jax.configs import default
from coarseseg_jax.datasets import synthetic

NUM_CLASSES = 6


def write_folder(root: str, num_images: int, num_sizes: int) -> list:
  rng = np.random.default_rng(0)
  sizes = [tuple(int(v) for v in rng.integers(96, 321, 2))
           for _ in range(num_sizes)]
  splits = {"train": [(96, 96)] * 8, "validation": [(96, 96)] * 2,
            "test": [sizes[i % num_sizes] for i in range(num_images)]}
  for split, shapes in splits.items():
    for sub in ("images", "labels"):
      os.makedirs(os.path.join(root, split, sub), exist_ok=True)
    for i, (h, w) in enumerate(shapes):
      image, label = synthetic.generate(0, split, i, max(h, w), NUM_CLASSES)
      Image.fromarray(image[:h, :w]).save(
          os.path.join(root, split, "images", f"{i}.png"))
      Image.fromarray(label[:h, :w]).save(
          os.path.join(root, split, "labels", f"{i}.png"))
  return sizes


class Programs:
  """Counts XLA programs built (compiled or loaded from a cache)."""

  def __init__(self):
    self.count = 0

  def __call__(self, event, *args, **kwargs):
    del args, kwargs
    if event in ("/jax/core/compile/backend_compile_duration",
                 "/jax/compilation_cache/cache_hits"):
      self.count += 1


def make_evaluator(model, mesh):
  """`run(variables, batches) -> summary` on either evaluation API."""
  if hasattr(evaluate, "Evaluator"):  # After issue 13.
    evaluator = evaluate.Evaluator(model, NUM_CLASSES, mesh)
    return lambda v, b: evaluator.run(v, b, full=True).summary
  step = jax.jit(evaluate.make_eval_step(model, NUM_CLASSES))
  return lambda v, b: evaluate.evaluate(step, v, b, mesh, full=True)[0]


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--images", type=int, default=40)
  parser.add_argument("--sizes", type=int, default=20)
  parser.add_argument("--repeats", type=int, default=2)
  parser.add_argument("--batch_size", type=int, default=8)
  args = parser.parse_args()
  jax.config.update("jax_enable_compilation_cache", False)
  tmp = tempfile.mkdtemp()
  sizes = write_folder(os.path.join(tmp, "photos"), args.images, args.sizes)
  data = ml_collections.ConfigDict(dict(
      dataset="folder", data_dir=os.path.join(tmp, "data"),
      manual_dir=os.path.join(tmp, "photos"), coarse_kernel=15, slic_block=16,
      slic_compactness=10.0, slic_sigma=1.0, train_labels="coarse",
      eval_center_crop=None,
      builder_kwargs={"validation_fraction": 0.1, "split_seed": 0}))
  builder = datasets.prepare(data, NUM_CLASSES, num_workers=1)
  # The default config's model and optimizer (so fields added since keep
  # their defaults), as the FULL-size model of the docstring.
  config = default.get_config()
  config.seed = 0
  config.model.update(dict(
      name="hcfcn", num_classes=NUM_CLASSES, tau=0.07, sim_features=32,
      similarity="dot", deformable=False, stage_blocks=(3, 4, 6), width=32,
      head_channels=32, dropout=0.1, dtype="float32", pretrained=None))
  config.train.update(dict(optimizer="adam", learning_rate=5e-4,
                           weight_decay=0.0))
  mesh = sharding.make_mesh()
  model = models.create_model(config.model)
  state = state_lib.create_train_state(config, model, mesh, 96)
  variables = {"params": state.params, "batch_stats": state.batch_stats}
  run = make_evaluator(model, mesh)
  programs = Programs()
  jax.monitoring.register_event_duration_secs_listener(programs)
  jax.monitoring.register_event_listener(programs)
  print(f"{args.images} test images of {len(set(sizes))} sizes "
        f"({min(sizes)} .. {max(sizes)}), batch {args.batch_size}, "
        f"{jax.device_count()} {jax.devices()[0].platform} device(s), "
        f"evaluate API: {'Evaluator' if hasattr(evaluate, 'Evaluator') else 'evaluate()'}")
  for i in range(1 + args.repeats):
    before = programs.count
    summary, seconds = timing.timed(lambda: run(
        variables, input_pipeline.create_eval_iterator(
            builder, data, "test", args.batch_size)))
    print(f"{'cold' if i == 0 else 'warm'}: {seconds:.1f} s, "
          f"{programs.count - before} programs built, "
          f"{int(summary['num_images'])} images, boundary recall "
          f"{summary['boundary_recall_mean']:.4f}, accuracy "
          f"{summary['accuracy_mean']:.4f}")


if __name__ == "__main__":
  main()
