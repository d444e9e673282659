"""Figures written to `workdir/figures/` at the end of a run (PNG).

- `sample_<i>.png`: image, coarse (training) label, fine label, prediction,
  and the learned superpixel boundaries (`superpixels.hard_superpixels`) beside
  the precomputed SLIC boundaries, for a few test images;
- `curves.png`: training loss terms and validation metrics against the step.

Built on `matplotlib.figure.Figure` (no pyplot state, no backend switch), so
importing this module in a notebook leaves inline plotting alone.
"""

import io
from typing import Dict, List, Optional, Sequence

import matplotlib
from matplotlib.figure import Figure
import numpy as np
from skimage.segmentation import find_boundaries

from coarseseg_jax import workdir as workdir_lib

IGNORE = 255


def save_figure(fig: Figure, path, dpi: int = 100) -> None:
  """Writes `fig` as PNG to `path` (local or gs://, atomically)."""
  buffer = io.BytesIO()
  fig.savefig(buffer, format="png", dpi=dpi)
  workdir_lib.write_bytes(path, buffer.getvalue())


def colorize(label: np.ndarray, num_classes: int) -> np.ndarray:
  """(H, W) class ids -> (H, W, 3) float RGB; ignored (255) pixels are white."""
  cmap = matplotlib.colormaps["tab10" if num_classes <= 10 else "tab20"]
  rgb = np.array([cmap(i % cmap.N)[:3] for i in range(num_classes)])
  out = np.ones(label.shape + (3,))
  valid = (label >= 0) & (label < num_classes)
  out[valid] = rgb[label[valid]]
  return out


def upsample_segments(segments: np.ndarray, stride: int, height: int,
                      width: int) -> np.ndarray:
  """(h, w) ids of `stride`-px cells -> (height, width) ids, pixel (y, x)
  taking cell (y // stride, x // stride). The cells may overhang the image
  (a padded canvas): the result is cropped to (height, width)."""
  full = np.repeat(np.repeat(segments, stride, axis=0), stride, axis=1)
  if full.shape[0] < height or full.shape[1] < width:
    raise ValueError(f"segments {segments.shape} at stride {stride} do not "
                     f"cover an image of {(height, width)}.")
  return full[:height, :width]


def overlay_boundaries(image: np.ndarray, segments: np.ndarray,
                       color=(1.0, 0.9, 0.0),
                       stride: Optional[int] = None) -> np.ndarray:
  """Draws the boundaries of `segments` over `image` (H, W, 3) in [0, 1].

  `segments` is (H, W), or the ids of `stride`-px cells covering the image
  from its top-left corner, e.g. the learned superpixels at stride 4: shape
  (ceil(H / stride), ceil(W / stride)), or larger when they come from a
  padded canvas. Any image size works, not only multiples of the stride.
  `stride` defaults to ceil(H / segments.shape[0]).
  """
  h, w = image.shape[:2]
  if stride is None:
    stride = max(1, -(-h // segments.shape[0]))
  segments = upsample_segments(segments, stride, h, w)
  out = image.copy()
  out[find_boundaries(segments, mode="inner")] = color
  return out


def save_samples(samples: Sequence[Dict[str, np.ndarray]], out_dir,
                 num_classes: int) -> List[str]:
  """One panel per sample; returns the paths written."""
  paths = []
  for i, s in enumerate(samples):
    h, w = int(s["height"]), int(s["width"])
    image = s["image"][:h, :w]
    panels = [("image", image),
              ("training label", colorize(s["label"][:h, :w], num_classes)),
              ("fine label", colorize(s["label_fine"][:h, :w], num_classes)),
              ("prediction", colorize(s["pred"][:h, :w], num_classes))]
    if "superpixels" in s:  # Cells of the padded canvas.
      sp = s["superpixels"]
      stride = s["image"].shape[0] // sp.shape[0]
      panels.append(("learned superpixels",
                     overlay_boundaries(image, sp, stride=stride)))
    if "slic" in s:
      panels.append(("SLIC superpixels",
                     overlay_boundaries(image, s["slic"][:h, :w])))
    fig = Figure(figsize=(3 * len(panels), 3.3))
    axes = fig.subplots(1, len(panels))
    for ax, (title, img) in zip(axes, panels):
      ax.imshow(np.clip(img, 0, 1), interpolation="nearest")
      ax.set_title(title, fontsize=9)
      ax.axis("off")
    fig.tight_layout()
    path = workdir_lib.path(out_dir) / f"sample_{i}.png"
    save_figure(fig, path)
    paths.append(str(path))
  return paths


def save_curves(records: Sequence[dict], path) -> None:
  """Training loss terms and validation metrics against the step."""
  fig = Figure(figsize=(11, 4))
  ax_l, ax_v = fig.subplots(1, 2)
  for split, ax, keys in (
      ("train", ax_l, ("loss", "cross_entropy", "slic", "slic_map")),
      ("finetune", ax_l, ("loss",)),
      ("validation", ax_v, ("accuracy_mean", "boundary_recall_mean",
                            "boundary_f1_mean", "miou_mean", "asa_mean"))):
    rows = [r for r in records if r.get("split") == split]
    for key in keys:
      pts = [(r["step"], r[key]) for r in rows if r.get(key) is not None]
      if pts:
        ax.plot(*zip(*pts), label=f"{split} {key}", marker="." if
                split == "validation" else None)
  ax_l.set_title("training loss terms")
  if ax_l.lines:
    ax_l.set_yscale("log")
  ax_v.set_title("validation")
  for ax in (ax_l, ax_v):
    ax.set_xlabel("step")
    if ax.lines:
      ax.legend(fontsize=8)
  fig.tight_layout()
  save_figure(fig, path)


def save_all(workdir: str, samples, records, num_classes: int) -> None:
  out_dir = workdir_lib.path(workdir) / "figures"
  save_samples(samples, out_dir, num_classes)
  save_curves(records, out_dir / "curves.png")
