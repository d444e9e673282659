r"""Project coarse labels (`datasets/coarse.py`) against the authors' OpenCV code.

  .venv/bin/pip install opencv-python-headless   # comparison only, not a dep
  python benchmarks/coarse_versus_cv2.py [--num_images=100] [--png=/tmp/x.png]

Re-implements the authors' `DataSet.make_coarse` (superpixel-regularization,
Functions/datasets.py): per class in ascending order, `cv2.erode` with
`np.ones((k, k))`, `cv2.findContours(RETR_TREE, CHAIN_APPROX_SIMPLE)`,
`cv2.approxPolyDP(c, 0.005 * arcLength(c), closed)`, `cv2.fillPoly` of all of
them, class id written there (later classes overwrite), 255 elsewhere. On the
default synthetic data (seed 0, train, 256 px, 6 classes) and kernels 1, 5,
10, 15, 20, 25 it prints, as shares of all pixels: labelled by each, agreement
(equal values, 255 included), labelled by one only (both ways), both labelled
with different classes, and the share of the authors' labelled pixels that
contradict the fine label. The project sets such pixels to 255 on purpose, so
`agree_m` compares against the authors' label with them masked, `agree_anc`
also moves OpenCV's even-kernel anchor one pixel back (where scikit-image put
it before coarse.py flipped its erosion: the project's labels before
dataset version 1.1.0), `agree_tol0`
compares both pipelines without simplification (erosion, tracing and filling
only). `rim/frame` splits the masked disagreement into pixels within 1 px of a
region edge of either label, and within 2 px of the image frame (3.1% of the
image). Times: ms per image and kernel, one process. Last line: one JSON.
"""

import argparse
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))  # benchmarks/: timing.py
sys.path[:0] = [os.path.dirname(HERE), HERE]

import cv2  # pylint: disable=g-import-not-at-top
import numpy as np
from scipy import ndimage
import timing  # benchmarks/timing.py

from coarseseg_jax.datasets import coarse
from coarseseg_jax.datasets import synthetic

KERNELS = (1, 5, 10, 15, 20, 25)
IGN = 255


def authors(fine, k, tol=0.005, anchor=(-1, -1)):
  """The authors' make_coarse, in NumPy (anchor=(-1, -1) is cv2's default)."""
  out = np.full(fine.shape, IGN, np.uint8)
  kernel = np.ones((k, k), np.uint8)
  for c in np.unique(fine[fine != IGN]):
    m = cv2.erode((fine == c).astype(np.uint8), kernel, anchor=anchor,
                  iterations=1)
    contours, _ = cv2.findContours(m, cv2.RETR_TREE, cv2.CHAIN_APPROX_SIMPLE)
    approx = [cv2.approxPolyDP(x, tol * cv2.arcLength(x, True), True)
              for x in contours]
    filled = np.zeros(fine.shape)
    cv2.fillPoly(filled, pts=approx, color=1)
    out[filled.astype(bool)] = c
  return out


def masked(lab, fine):
  return np.where((lab != IGN) & (lab != fine), IGN, lab).astype(np.uint8)


def edges(lab):
  """Pixels whose 3x3 neighbourhood holds another value."""
  return (ndimage.maximum_filter(lab, 3, mode="nearest")
          != ndimage.minimum_filter(lab, 3, mode="nearest"))


def main():
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--num_images", type=int, default=100)
  p.add_argument("--png", default="/tmp/coarse_versus_cv2.png")
  p.add_argument("--png_index", type=int, default=0)
  p.add_argument("--png_kernel", type=int, default=10)
  a = p.parse_args()
  fines = [synthetic.generate(0, "train", i, 256, 6)[1]
           for i in range(a.num_images)]
  frame = np.pad(np.zeros(np.subtract(fines[0].shape, 4), bool), 2,
                 constant_values=True)
  rows = {}
  for k in KERNELS:
    s = dict.fromkeys(
        ("lab_proj", "lab_auth", "agree", "only_proj", "only_auth",
         "both_diff", "auth_wrong", "agree_m", "agree_anc", "agree_tol0",
         "dis_m", "dis_rim", "dis_frame", "ms_proj", "ms_auth"), 0.0)
    for fine in fines:
      pr, proj_s = timing.timed(lambda: coarse.coarse_label(fine, k))
      au, auth_s = timing.timed(lambda: authors(fine, k))
      s["ms_proj"] += 1e3 * proj_s
      s["ms_auth"] += 1e3 * auth_s
      lp, la = pr != IGN, au != IGN
      s["lab_proj"] += lp.mean()
      s["lab_auth"] += la.mean()
      s["agree"] += (pr == au).mean()
      s["only_proj"] += (lp & ~la).mean()
      s["only_auth"] += (la & ~lp).mean()
      s["both_diff"] += (lp & la & (pr != au)).mean()
      s["auth_wrong"] += (la & (au != fine)).sum() / max(la.sum(), 1)
      am = masked(au, fine)
      s["agree_m"] += (pr == am).mean()
      anc = ((k - 1) // 2, (k - 1) // 2)  # The old side for even k.
      s["agree_anc"] += (pr == masked(authors(fine, k, anchor=anc), fine)
                         ).mean()
      s["agree_tol0"] += (coarse.coarse_label(fine, k, tolerance=0.0)
                          == masked(authors(fine, k, tol=0.0), fine)).mean()
      dis = pr != am
      rim = edges(pr) | edges(am)
      s["dis_m"] += dis.sum()
      s["dis_rim"] += (dis & rim).sum()
      s["dis_frame"] += (dis & frame).sum()
    n = len(fines)
    row = {key: v / n for key, v in s.items()}
    row["dis_rim"] = s["dis_rim"] / max(s["dis_m"], 1)
    row["dis_frame"] = s["dis_frame"] / max(s["dis_m"], 1)
    row["dis_m"] = s["dis_m"] / (n * fines[0].size)
    rows[k] = row
  cols = list(rows[KERNELS[0]])
  print("shares of all pixels unless noted; auth_wrong: of the authors' "
        "labelled pixels; dis_rim/dis_frame: of the masked disagreement")
  print("k   " + " ".join(f"{c:>10s}" for c in cols))
  for k, row in rows.items():
    print(f"{k:<3d} " + " ".join(
        f"{row[c]:10.2f}" if c.startswith("ms") else f"{row[c]:10.5f}"
        for c in cols))
  if a.png:  # fine | project | authors | disagreement (masked authors).
    fine = fines[a.png_index]
    pr, au = coarse.coarse_label(fine, a.png_kernel), authors(fine, a.png_kernel)
    am = masked(au, fine)
    pal = np.concatenate([np.array(
        [[230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200],
         [245, 130, 48], [145, 30, 180]] * 43, np.uint8)[:255],
                          np.zeros((1, 3), np.uint8)])
    diff = np.full(fine.shape + (3,), 0, np.uint8)
    diff[(pr != IGN) & (am == IGN)] = (255, 0, 0)    # project only: red
    diff[(pr == IGN) & (am != IGN)] = (0, 255, 0)    # authors only: green
    diff[(pr != am) & (pr != IGN) & (am != IGN)] = (255, 255, 255)
    diff[(au != IGN) & (au != fine)] = (0, 0, 255)   # authors wrong: blue
    sep = np.full((fine.shape[0], 4, 3), 128, np.uint8)
    img = np.concatenate([pal[fine], sep, pal[pr], sep, pal[au], sep, diff], 1)
    img = np.repeat(np.repeat(img, 2, 0), 2, 1)
    cv2.imwrite(a.png, img[..., ::-1])
    print(f"wrote {a.png} (image {a.png_index}, kernel {a.png_kernel}): fine |"
          " project | authors | red proj-only, green auth-only, blue auth-wrong")
  print(json.dumps({"num_images": len(fines), "cv2": cv2.__version__,
                    "rows": {str(k): {c: round(v, 6) for c, v in r.items()}
                             for k, r in rows.items()}}))


if __name__ == "__main__":
  main()
