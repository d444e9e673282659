r"""Does colour give the class borders away? Synthetic against texture_mosaic.

  python benchmarks/border_contrast.py                  # 100 images a dataset
  python benchmarks/border_contrast.py --num_images=20  # a quick look
  python benchmarks/border_contrast.py --num_images=20 \
      --figure=results/texture_mosaic_samples.png

For each dataset (default parameters, 256 x 256, 6 classes, seed 0; the
first `--num_images` training images), with nothing prepared:

* border AUC: how well the CIELAB distance between neighbouring stride-4
  blocks tells a class border from a region's interior
  (`coarseseg_jax.datasets.border_contrast`; 1 = always, 0.5 = chance);
* colour accuracy: pixels classified by the nearest class-mean colour (class
  means from the other half of the images; chance about 1/6);
* SLIC ASA: the share of pixels a SLIC segment's majority class gets right
  (one segment per 16 x 16 block, as prepared): how closely SLIC, which the
  regularizer imitates, follows the class borders;
* labelled: the share of pixels the coarse labels label, `erosion` and
  `annotator` style, at kernel 25;
* nearest fill: the share of the unlabelled pixels that the nearest labelled
  pixel's class gets right (`refine.fills.nearest_labelled`, the free fill that
  erosion's band, centred on the true border, favours), per style.

Then, per texture_mosaic source, how its validation and test parts differ
from its train part (`texture_mosaic.split_statistics`: mean luminance
offset and spread ratio): the splits read different areas of each photograph.

`--figure` also draws a few texture_mosaic validation images with their
fine labels and both styles of coarse labels (kernel 25) into a PNG. The
last line is one JSON object.
"""

import argparse
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))  # benchmarks/: timing.py
sys.path[:0] = [os.path.dirname(HERE), HERE]

import numpy as np  # pylint: disable=g-import-not-at-top
import timing  # benchmarks/timing.py  # pylint: disable=g-import-not-at-top

from coarseseg_jax import host  # pylint: disable=g-import-not-at-top
from coarseseg_jax.refine import fills
from coarseseg_jax.datasets import annotator
from coarseseg_jax.datasets import border_contrast
from coarseseg_jax.datasets import coarse
from coarseseg_jax.datasets import slic
from coarseseg_jax.datasets import synthetic
from coarseseg_jax.datasets import texture_mosaic

DATASETS = {"synthetic": synthetic.generate,
            "texture_mosaic": texture_mosaic.generate}
NUM_CLASSES = 6


def colour_accuracy(data) -> float:
  """Nearest class-mean colour accuracy: means from the first half."""
  half = len(data) // 2
  means = np.full((NUM_CLASSES, 3), np.inf)
  for c in range(NUM_CLASSES):
    pixels = [im[lab == c] for im, lab in data[:half] if np.any(lab == c)]
    if pixels:
      means[c] = np.concatenate(pixels).mean(axis=0)
  right = total = 0
  for image, label in data[half:]:
    d = ((image[:, :, None].astype(float) - means) ** 2).sum(-1)
    right += np.count_nonzero(d.argmin(-1) == label)
    total += label.size
  return right / total


def slic_asa(data) -> float:
  """Achievable segmentation accuracy of the prepared SLIC maps."""
  right = total = 0
  for image, label in data:
    seg = slic.slic_map(image)
    hist = np.zeros((seg.max() + 1, NUM_CLASSES))
    np.add.at(hist, (seg.ravel(), label.ravel()), 1)
    right += hist.max(axis=1).sum()
    total += label.size
  return right / total


def measure(name: str, num_images: int, size: int) -> dict:
  generate = DATASETS[name]
  data, seconds = timing.timed(lambda: [
      generate(0, "train", i, size, NUM_CLASSES) for i in range(num_images)])
  labelled, nearest = {}, {}
  for style in annotator.STYLES:
    fractions, right, band = [], 0, 0
    for i, (_, lab) in enumerate(data):
      coarse_label = annotator.make_coarse_label(lab, style, 25,
                                                 f"train_{i:05d}")[0]
      fractions.append(coarse.labelled_fraction(coarse_label))
      unlabelled = coarse_label == 255
      filled = fills.nearest_labelled(coarse_label)
      right += np.count_nonzero((filled == lab) & unlabelled)
      band += np.count_nonzero(unlabelled)
    labelled[style] = float(np.mean(fractions))
    nearest[style] = right / max(band, 1)
  return {"border_auc": border_contrast.border_auc(data),
          "colour_accuracy": colour_accuracy(data),
          "slic_asa": slic_asa(data),
          "labelled_k25": labelled,
          "nearest_fill_k25": nearest,
          "generate_s_per_image": seconds / num_images}


def _colourise(label: np.ndarray) -> np.ndarray:
  """(H, W, 3) uint8: a colour per class, white where unlabelled (255)."""
  palette = np.array([[230, 25, 75], [60, 180, 75], [255, 225, 25],
                      [0, 130, 200], [245, 130, 48], [145, 30, 180],
                      [70, 240, 240], [240, 50, 230]], np.uint8)
  out = palette[np.minimum(label, len(palette) - 1)]
  out[label == 255] = 255
  return out


def write_figure(path: str, num: int, size: int) -> None:
  """Rows: image, fine label, erosion and annotator coarse labels (k25) of
  `num` texture_mosaic validation images."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  columns = []
  for i in range(num):
    image, label = texture_mosaic.generate(0, "validation", i, size,
                                           NUM_CLASSES)
    cells = [image, _colourise(label)]
    for style in annotator.STYLES:
      cells.append(_colourise(annotator.make_coarse_label(
          label, style, 25, f"validation_{i:05d}")[0]))
    gap = np.full((4, size, 3), 255, np.uint8)
    columns.append(np.concatenate(
        [x for cell in cells for x in (cell, gap)][:-1], axis=0))
  gap = np.full((columns[0].shape[0], 4, 3), 255, np.uint8)
  grid = np.concatenate([x for c in columns for x in (c, gap)][:-1], axis=1)
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  Image.fromarray(grid).save(path)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--num_images", type=int, default=100)
  parser.add_argument("--image_size", type=int, default=256)
  parser.add_argument("--figure", default=None,
                      help="PNG of texture_mosaic samples and coarse labels.")
  parser.add_argument("--figure_images", type=int, default=6)
  args = parser.parse_args()
  if args.figure:
    write_figure(args.figure, args.figure_images, args.image_size)
  results = {name: measure(name, args.num_images, args.image_size)
             for name in DATASETS}
  print(f"{args.num_images} training images of {args.image_size} x "
        f"{args.image_size} per dataset, seed 0; {host.processor()}")
  print(f"{'dataset':16s} {'border AUC':>10s} {'colour acc':>10s} "
        f"{'SLIC ASA':>9s}  labelled / nearest fill (k25), erosion | "
        "annotator")
  for name, r in results.items():
    lab, near = r["labelled_k25"], r["nearest_fill_k25"]
    print(f"{name:16s} {r['border_auc']:10.3f} {r['colour_accuracy']:10.3f} "
          f"{r['slic_asa']:9.3f}  {lab['erosion']:.3f} / "
          f"{near['erosion']:.3f} | {lab['annotator']:.3f} / "
          f"{near['annotator']:.3f}")
  splits = {source.name: texture_mosaic.split_statistics(i)
            for i, source in enumerate(texture_mosaic.SOURCES)}
  print("texture_mosaic split parts against train's: luminance offset, "
        "spread ratio")
  print(f"{'source':10s} {'validation':>16s} {'test':>16s}")
  for name, stats in splits.items():
    print(f"{name:10s} " + " ".join(
        f"{stats[split][0]:+7.2f}, {stats[split][1]:5.2f}"
        for split in ("validation", "test")))
  print(json.dumps({"num_images": args.num_images,
                    "image_size": args.image_size, "cpu": host.processor(),
                    **results, "texture_mosaic_split_parts": splits}))


if __name__ == "__main__":
  main()
