r"""HCFCN-16's assignments at initialisation: paper mode beside the project's.

  python benchmarks/paper_mode_init.py                 # seeds 0 and 1, 256 px
  python benchmarks/paper_mode_init.py --seeds=0,1,2 --size=128

The JAX counterpart of `benchmarks/authors_init.py` (the authors' own model,
through the PyTorch port): the same four scikit-image photos (astronaut,
coffee, chelsea, rocket; centre square crops resized to ``--size``, [0, 1]),
one batch in train mode as training starts (BN batch statistics, no
dropout), full-size HCFCN-16 with 8 classes, for

* ``paper``: `configs/default.py`'s ``authors_code`` (what the SUIM,
  PanNuke and Cityscapes configs run): dot similarity, tau 0.07, PyTorch's
  initialisation, out-of-grid candidates zero-padded, [0, 1] input;
* ``improved``: the project's defaults (cosine, tau 0.05, masked, He init,
  ImageNet-normalised input).

Per level and seed (Flax's init RNG, so the weights are other draws of the
same distributions as the authors'): mean entropy in nats (uniform 2.197),
share of pixels whose argmax is the parent cell, share whose largest weight
exceeds 0.9, and on the pixels whose candidates reach out of the grid the
weight on those candidates (paper mode only; masked otherwise). The last line
is one JSON object.
"""

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from coarseseg_jax import xla_flags  # pylint: disable=unused-import,g-bad-import-order

import jax  # pylint: disable=g-import-not-at-top
import jax.numpy as jnp
import numpy as np

from coarseseg_jax import assignment_stats
from coarseseg_jax import models
from coarseseg_jax import superpixels
from coarseseg_jax.configs import default

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from photos import PHOTOS, load_photos  # pylint: disable=g-import-not-at-top,wrong-import-position


def level_stats(a: jax.Array) -> dict:
  """Entropy, parent share, >0.9 share, out-of-grid weight at the border."""
  h, w = a.shape[1:3]
  outside = ~superpixels.valid_mask(h // 2, w // 2)  # (h, w, 9)
  border = outside.any(-1)
  oog = jnp.sum(jnp.where(outside[None], a, 0.0), -1)  # (B, h, w)
  return {
      "entropy": float(jnp.mean(assignment_stats.entropy(a))),
      "parent": float(jnp.mean(jnp.argmax(a, -1) == 4)),
      "max>0.9": float(jnp.mean(jnp.max(a, -1) > 0.9)),
      "oog_border": float(jnp.mean(oog[:, border])),
  }


def model_config(variant: str):
  config = default.get_config()
  if variant == "paper":
    default.authors_code(config)
  config.model.num_classes = 8
  config.model.dropout = 0.0
  return config.model


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--seeds", default="0,1")
  parser.add_argument("--size", type=int, default=256)
  args = parser.parse_args()
  images = jnp.asarray(load_photos(args.size))
  results = {}
  print(f"{'variant':>9} {'seed':>4} {'level':>5} {'entropy':>8} "
        f"{'parent':>7} {'>0.9':>6} {'oog border':>10}")
  for variant in ("paper", "improved"):
    model = models.create_model(model_config(variant))
    for seed in (int(s) for s in args.seeds.split(",")):
      variables = model.init({"params": jax.random.key(seed)}, images)
      (_, assignments), _ = model.apply(variables, images, train=True,
                                        mutable=["batch_stats"])
      for s, a in zip((4, 8), assignments):
        st = level_stats(a)
        results[f"{variant}/seed{seed}/A{s}"] = st
        print(f"{variant:>9} {seed:>4} {'A' + str(s):>5} {st['entropy']:8.3f} "
              f"{st['parent']:7.1%} {st['max>0.9']:6.1%} "
              f"{st['oog_border']:10.3f}")
  print(json.dumps({"benchmark": "paper_mode_init", "size": args.size,
                    "photos": PHOTOS, "results": results}))


if __name__ == "__main__":
  main()
