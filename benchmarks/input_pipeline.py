r"""Training input-pipeline throughput (batches/s), to compare with train_step.py.

  python benchmarks/input_pipeline.py                 # synthetic 256x256 data
  python benchmarks/input_pipeline.py --scale_min=0.5 --scale_max=2.0
  python benchmarks/input_pipeline.py --data_dir=data/suim/default/1.0.0 \
      --crop=512                                      # a prepared TFDS dir

Without --data_dir, prepares the `bench256` config of the test fixture builder
(tests/pipeline_fixtures.py: 64 noisy 256x256 train images, PNG-encoded like
real data) in a temporary directory. Times `create_train_iterator` after a
warm-up: batches/s on its own and with `shard_batch` onto all devices, the
time to the first batch, and the time to the first batch when resuming in the
middle of an epoch. The last line is one JSON object.
"""

import argparse
import importlib.util
import json
import os
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))  # benchmarks/: timing.py
ROOT = os.path.dirname(HERE)
sys.path[:0] = [ROOT, HERE]

from coarseseg_jax import xla_flags  # pylint: disable=unused-import,g-bad-import-order

import jax  # pylint: disable=g-import-not-at-top
import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
import timing  # benchmarks/timing.py  # pylint: disable=g-import-not-at-top

from coarseseg_jax import host  # pylint: disable=g-import-not-at-top
from coarseseg_jax.configs import default  # pylint: disable=g-import-not-at-top
from coarseseg_jax import input_pipeline  # pylint: disable=g-import-not-at-top
from coarseseg_jax import sharding


def synthetic_builder(data_dir):
  spec = importlib.util.spec_from_file_location(
      "pipeline_fixtures", os.path.join(ROOT, "tests", "pipeline_fixtures.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.prepare(data_dir, "bench256")


def rate(iterator, warmup, num_batches, consume=None):
  """Batches/s of `num_batches` batches after `warmup` (each one consumed)."""

  def one_batch():
    batch = next(iterator)
    if consume:
      jax.block_until_ready(consume(batch))

  return 1 / timing.mean_seconds(one_batch, num_batches, warmup)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--data_dir", default=None,
                      help="a prepared TFDS dataset dir (name/config/version)")
  parser.add_argument("--split", default="train")
  parser.add_argument("--batch_size", type=int, default=8)
  parser.add_argument("--crop", type=int, default=256)
  parser.add_argument("--scale_min", type=float, default=1.0)
  parser.add_argument("--scale_max", type=float, default=1.0)
  parser.add_argument("--no_hflip", action="store_true")
  parser.add_argument("--train_labels", default="coarse")
  parser.add_argument("--num_batches", type=int, default=100)
  parser.add_argument("--warmup", type=int, default=10)
  args = parser.parse_args()

  config = default.get_config().data
  config.crop_size = args.crop
  config.scale_range = (args.scale_min, args.scale_max)
  config.hflip = not args.no_hflip
  config.train_labels = args.train_labels
  tmp = None
  if args.data_dir:
    builder = tfds.builder_from_directory(args.data_dir)
  else:
    tmp = tempfile.TemporaryDirectory()
    builder, prepare_s = timing.timed(lambda: synthetic_builder(tmp.name))
    print(f"prepared the synthetic data in {prepare_s:.1f} s")
  spe = input_pipeline.steps_per_epoch(builder, args.batch_size, args.split)

  def make(start_step=0):
    return input_pipeline.create_train_iterator(
        builder, config, args.batch_size, seed=0, start_step=start_step,
        split=args.split)

  def started(start_step=0):
    """An iterator whose first batch has been taken."""
    it = make(start_step)
    next(it)
    return it

  it, first_s = timing.timed(started)
  batches_per_s = rate(it, args.warmup, args.num_batches)
  mesh = sharding.make_mesh()
  sharded_per_s = rate(make(), args.warmup, args.num_batches,
                       lambda b: sharding.shard_batch(b, mesh))
  _, resume_s = timing.timed(lambda: started(3 * spe + spe // 2))

  result = {
      "benchmark": "input_pipeline",
      "data": args.data_dir or "synthetic bench256 (64 x 256x256 PNG)",
      "split": args.split, "steps_per_epoch": spe,
      "batch_size": args.batch_size, "crop": args.crop,
      "scale_range": [args.scale_min, args.scale_max],
      "hflip": config.hflip,
      "batches_per_s": round(batches_per_s, 2),
      "images_per_s": round(batches_per_s * args.batch_size, 1),
      "batches_per_s_with_shard_batch": round(sharded_per_s, 2),
      "first_batch_s": round(first_s, 3),
      "resume_mid_epoch_first_batch_s": round(resume_s, 3),
      "cpu_count": os.cpu_count(), "devices": jax.device_count(),
      "backend": jax.default_backend(), "machine": host.processor(),
  }
  for k, v in result.items():
    print(f"{k:>34}: {v}")
  print(json.dumps(result))
  if tmp is not None:
    tmp.cleanup()


if __name__ == "__main__":
  main()
