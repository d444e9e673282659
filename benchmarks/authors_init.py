r"""The authors' HCFCN-16 at their own initialisation: how soft are A4 / A8?

  python benchmarks/authors_init.py                  # seeds 0 and 1, 256 px
  python benchmarks/authors_init.py --seeds=0,1,2 --size=128

Uses `tests/authors_torch.py` (an independent PyTorch port of the paper's
code, github.com/JortdeJong13/superpixel-regularization; needs torch) at
full size, ``SegModel(ResNet34Encoder(), FCNHead(256, 8),
HCDecoder(0.07, 48))``, with the authors' default initialisation
(``torch.manual_seed(seed)`` then construction: PyTorch's Conv2d / BatchNorm
defaults, DCN weight uniform(+-1/sqrt(cin*9)), bias 0, offset/mask conv 0,
i.e. offsets 0 and masks 0.5). Input: four scikit-image photos (astronaut,
coffee, chelsea, rocket), centre square crops resized to ``--size`` in
[0, 1], no normalisation (as the authors' ``T.ToTensor()``), one batch, in
train mode as training starts (BatchNorm on batch statistics), no gradient.

Per assignment level (A4: stride 4 -> 8, A8: stride 8 -> 16) and seed:

* ``entropy``: mean over pixels of the assignment's entropy in nats
  (uniform over the 9 candidates: ln 9 = 2.197, one-hot: 0);
* ``parent``: share of pixels whose argmax is the parent cell (k = 4);
* ``oog border``: on the pixels whose parent cell lies on the border of the
  coarse grid (some of their 9 candidates fall outside it), the mean total
  weight on the out-of-grid candidates (zero-padded: similarity 0, so they
  keep softmax weight; that weight is lost when decoding). ``uniform``
  is the same figure for uniform assignments (3/9 on edges, 5/9 at corners).

Also the share of pixels whose largest weight is above 0.9 (``>0.9``). The
last line is one JSON object.
"""

import argparse
import json
import math
import os
import sys

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))  # benchmarks/: timing.py
sys.path[:0] = [os.path.join(HERE, "..", "tests"), HERE]
import authors_torch as port  # pylint: disable=wrong-import-position
import timing  # pylint: disable=wrong-import-position
import photos  # pylint: disable=wrong-import-position
from photos import PHOTOS  # pylint: disable=wrong-import-position


def load_photos(size):
  """`photos.load_photos` as an NCHW torch tensor."""
  return torch.from_numpy(photos.load_photos(size).transpose(0, 3, 1, 2).copy())


def out_of_grid(h, w):
  """(9, h, w) bool: candidate k of each pixel lies outside the coarse grid."""
  ci = torch.arange(h) // 2
  cj = torch.arange(w) // 2
  hc, wc = h // 2, w // 2
  masks = []
  for dy, dx in port.NEIGHBOURS:
    yi = (ci + dy)[:, None].expand(h, w)
    xj = (cj + dx)[None, :].expand(h, w)
    masks.append((yi < 0) | (yi >= hc) | (xj < 0) | (xj >= wc))
  return torch.stack(masks)


def level_stats(a):
  a = a.double()
  _, _, h, w = a.shape
  ent = -(a * torch.log(a.clamp_min(1e-300))).sum(1)
  oog = out_of_grid(h, w)
  border = oog.any(0)
  lost = (a * oog[None]).sum(1)
  uniform = oog.double().sum(0) / 9
  return {
      "entropy": ent.mean().item(),
      "parent": (a.argmax(1) == 4).double().mean().item(),
      "max>0.9": (a.max(1).values > 0.9).double().mean().item(),
      "oog_border": lost[:, border].mean().item(),
      "oog_border_uniform": uniform[border].mean().item(),
      "border_share": border.double().mean().item(),
  }


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--seeds", default="0,1")
  parser.add_argument("--size", type=int, default=256)
  parser.add_argument("--threads", type=int, default=2)
  args = parser.parse_args()
  torch.set_num_threads(args.threads)
  seeds = [int(s) for s in args.seeds.split(",")]
  images = load_photos(args.size)
  print(f"authors' HCFCN-16 (full size, tau 0.07, sim_feat 48) at their "
        f"default init, train mode, {len(PHOTOS)} photos at "
        f"{args.size}x{args.size}; uniform entropy {math.log(9):.3f} nats")
  print(f"{'seed':>4} {'level':>5} {'entropy':>8} {'parent':>7} {'>0.9':>6} "
        f"{'oog border':>10} {'uniform':>8}")
  results = {}
  watch = timing.Stopwatch()
  for seed in seeds:
    torch.manual_seed(seed)
    model = port.SegModel(port.ResNet34Encoder(), port.FCNHead(256, 8),
                          port.HCDecoder(0.07, 48))
    model.train()
    with torch.no_grad():
      assignments, _ = model(images)
    for level in (4, 8):
      st = level_stats(assignments[level])
      results[f"seed{seed}/A{level}"] = st
      print(f"{seed:>4} {'A%d' % level:>5} {st['entropy']:8.3f} "
            f"{st['parent']:7.1%} {st['max>0.9']:6.1%} "
            f"{st['oog_border']:10.3f} {st['oog_border_uniform']:8.3f}")
  mean = {}
  for level in (4, 8):
    for key in ("entropy", "parent", "max>0.9", "oog_border"):
      mean[f"A{level}/{key}"] = float(np.mean(
          [results[f"seed{s}/A{level}"][key] for s in seeds]))
  print(f"({watch.seconds():.1f} s)")
  print(json.dumps({"benchmark": "authors_init", "size": args.size,
                    "photos": list(PHOTOS), "seeds": seeds,
                    "uniform_entropy": math.log(9), "per_seed": results,
                    "mean": mean}, sort_keys=True))


if __name__ == "__main__":
  main()
