r"""Dataset-preparation throughput: SLIC maps, and whole examples, per second.

  python benchmarks/slic.py                 # 64 synthetic 256x256 images
  python benchmarks/slic.py --num_images=200 --coarse

Times `slic.slic_map` (one segment per 16x16 block, compactness 10, sigma 1)
on 1 process and on all cores (spawned processes, as preparation does; the
pool's start-up is included), then the whole per-example work of preparation
(`base.process_item`: generate, validate, coarse label, SLIC, PNG encoding).
`--coarse` also prints the fraction of pixels that generated coarse labels
leave labelled at kernel sizes 1, 5, 10, 15, 20, 25 on the synthetic data.
The last line is one JSON object.
"""

import argparse
import functools
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))  # benchmarks/: timing.py
sys.path[:0] = [os.path.dirname(HERE), HERE]

import numpy as np  # pylint: disable=g-import-not-at-top
import timing  # benchmarks/timing.py  # pylint: disable=g-import-not-at-top

from coarseseg_jax import host  # pylint: disable=g-import-not-at-top
from coarseseg_jax.datasets import base  # pylint: disable=g-import-not-at-top
from coarseseg_jax.datasets import coarse
from coarseseg_jax.datasets import slic
from coarseseg_jax.datasets import synthetic

KERNELS = (1, 5, 10, 15, 20, 25)


def _rate(fn, items, workers):
  """Images/s of fn over items: in-process, or on a warmed process pool."""
  if workers <= 1:
    _, seconds = timing.timed(lambda: list(slic.parallel_map(fn, items, 1)))
    return len(items) / seconds, 0.0

  def warm_pool():
    pool = slic.make_pool(workers)
    list(slic.parallel_map(fn, items[:workers], workers, executor=pool))
    return pool

  pool, startup = timing.timed(warm_pool)
  _, seconds = timing.timed(lambda: list(
      slic.parallel_map(fn, items, workers, executor=pool)))
  pool.shutdown()
  return len(items) / seconds, startup


def coarse_fractions(num_images, size):
  """{kernel: (mean labelled fraction, its std, fraction of conflicts)}."""
  rows = {k: [] for k in KERNELS}
  conflicts = {k: 0 for k in KERNELS}
  for i in range(num_images):
    _, label = synthetic.generate(0, "train", i, size, 6)
    for k in KERNELS:
      out, n = coarse.coarse_label(label, k, return_conflicts=True)
      rows[k].append(coarse.labelled_fraction(out))
      conflicts[k] += n
  pixels = num_images * size * size
  return {k: (float(np.mean(v)), float(np.std(v)), conflicts[k] / pixels)
          for k, v in rows.items()}


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--num_images", type=int, default=64)
  parser.add_argument("--size", type=int, default=256)
  parser.add_argument("--workers", type=int, default=None,
                      help="Processes for the parallel run (default: all).")
  parser.add_argument("--coarse", action="store_true")
  args = parser.parse_args()
  workers = args.workers or slic.default_num_workers()
  indices = list(range(args.num_images))
  result = {"benchmark": "slic", "num_images": args.num_images,
            "size": args.size, "workers": workers,
            "cpu": host.processor(),
            "cores": os.cpu_count()}

  images = [synthetic.generate(0, "train", i, args.size, 6)[0]
            for i in indices]
  slic.slic_map(images[0])  # Warm-up (lazy imports).
  for name, fn, items in (
      ("slic", slic.slic_map, images),
      ("example", functools.partial(
          base.process_item, synthetic.Synthetic.load_item,
          base.ProcessSpec(6, 25, 16, 10.0, 1.0)),
       [(0, "train", i, args.size, 6) for i in indices])):
    rate1, _ = _rate(fn, items, 1)
    rate_all, startup = _rate(fn, items, workers)
    result[f"{name}_images_per_s_1"] = round(rate1, 2)
    result[f"{name}_images_per_s_all"] = round(rate_all, 2)
    result["pool_startup_s"] = round(startup, 2)
    what = ("SLIC maps" if name == "slic" else
            "whole examples (generate, coarse label, SLIC, PNG)")
    print(f"{what}: 1 process {rate1:.1f} img/s, {workers} processes "
          f"{rate_all:.1f} img/s (pool start-up {startup:.1f} s)")

  if args.coarse:
    fractions = coarse_fractions(args.num_images, args.size)
    for k, (mean, std, conflicts) in fractions.items():
      print(f"kernel {k:2d}: {100 * mean:5.1f} % labelled (std {100 * std:.1f}"
            f"), polygon pixels contradicting the fine label (set to 255): "
            f"{100 * conflicts:.3f} %")
    result["labelled_fraction"] = {str(k): round(m, 4)
                                   for k, (m, _, _) in fractions.items()}
    result["conflict_fraction"] = {str(k): round(c, 5)
                                   for k, (_, _, c) in fractions.items()}
  print(json.dumps(result))


if __name__ == "__main__":
  main()
