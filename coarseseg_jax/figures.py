"""Figures written to `workdir/figures/` at the end of a run (PNG).

- `sample_<i>.png`: image, coarse (training) label, fine label, prediction,
  and the learned superpixel boundaries (`superpixels.hard_superpixels`) beside
  the precomputed SLIC boundaries, for a few test images;
- `curves.png`: training loss terms and validation metrics against the step;
- `confusion.png`: the test confusion matrix, row-normalised, class names;
- `samples.npz`: the sample images, labels and predictions as arrays (what
  the experiments' prediction figure is drawn from).

Label panels carry a legend of the class colours, with the class names.

Built on `matplotlib.figure.Figure` (no pyplot state, no backend switch), so
importing this module in a notebook leaves inline plotting alone.
"""

import io
from typing import Dict, List, Optional, Sequence

import matplotlib
from matplotlib.figure import Figure
from matplotlib.patches import Patch
import numpy as np
from skimage.segmentation import find_boundaries

from coarseseg_jax import filesystem



def save_figure(fig: Figure, path, dpi: int = 100) -> None:
  """Writes `fig` as PNG to `path` (local or gs://, atomically)."""
  buffer = io.BytesIO()
  fig.savefig(buffer, format="png", dpi=dpi)
  filesystem.write_bytes(path, buffer.getvalue())


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


def overlay_learned(image: np.ndarray, sample: Dict[str, np.ndarray]
                    ) -> np.ndarray:
  """`overlay_boundaries` of a sample's learned superpixels (`superpixels`,
  cells of its padded canvas `image`) over `image` (H, W, 3), its crop."""
  sp = sample["superpixels"]
  return overlay_boundaries(image, sp,
                            stride=sample["image"].shape[0] // sp.shape[0])


def class_legend(fig: Figure, num_classes: int,
                 class_names: Optional[Sequence[str]] = None) -> None:
  """A legend of the class colours (and white = unlabelled) below `fig`."""
  names = list(class_names or [str(c) for c in range(num_classes)])
  colours = colorize(np.arange(num_classes), num_classes)
  handles = [Patch(facecolor=colours[c], edgecolor="0.5", label=names[c])
             for c in range(num_classes)]
  handles.append(Patch(facecolor="white", edgecolor="0.5",
                       label="unlabelled"))
  fig.legend(handles=handles, loc="lower center", fontsize=8, frameon=False,
             ncol=min(len(handles), 10))


def panel_strip(sample: Dict[str, np.ndarray], num_classes: int,
                gap: int = 2) -> np.ndarray:
  """(H, k * W, 3) float image: the image, the prediction, and the learned
  and SLIC superpixels over the image, side by side (for TensorBoard)."""
  h, w = int(sample["height"]), int(sample["width"])
  image = np.clip(sample["image"][:h, :w], 0, 1)
  panels = [image, colorize(sample["pred"][:h, :w], num_classes)]
  if "superpixels" in sample:
    panels.append(overlay_learned(image, sample))
  if "slic" in sample and (sample["slic"][:h, :w] >= 0).any():
    panels.append(overlay_boundaries(image, sample["slic"][:h, :w]))
  white = np.ones((h, gap, 3))
  parts = []
  for panel in panels:
    parts += [panel, white]
  return np.concatenate(parts[:-1], axis=1)


def save_samples(samples: Sequence[Dict[str, np.ndarray]], out_dir,
                 num_classes: int,
                 class_names: Optional[Sequence[str]] = None) -> List[str]:
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
      panels.append(("learned superpixels", overlay_learned(image, s)))
    if "slic" in s:
      panels.append(("SLIC superpixels",
                     overlay_boundaries(image, s["slic"][:h, :w])))
    rows = -(-num_classes // 10) + 1
    height = 3.3 + 0.25 * rows
    fig = Figure(figsize=(3 * len(panels), height))
    # Fixed margins (title above, legend rows below), not tight_layout: a
    # layout pass draws the figure once more, as long as saving it.
    fig.subplots_adjust(left=0.01, right=0.99, top=1 - 0.3 / height,
                        bottom=0.08 * rows, wspace=0.05)
    axes = fig.subplots(1, len(panels))
    for ax, (title, img) in zip(axes, panels):
      ax.imshow(np.clip(img, 0, 1), interpolation="nearest")
      ax.set_title(title, fontsize=9)
      ax.axis("off")
    class_legend(fig, num_classes, class_names)
    path = filesystem.path(out_dir) / f"sample_{i}.png"
    save_figure(fig, path)
    paths.append(str(path))
  return paths


def save_curves(records: Sequence[dict], path) -> None:
  """Training loss terms and validation metrics against the step."""
  fig = Figure(figsize=(11, 4))
  fig.subplots_adjust(left=0.07, right=0.98, top=0.92, bottom=0.12,
                      wspace=0.2)  # Fixed: no layout pass (see save_samples).
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
  save_figure(fig, path)


def save_confusion(confusion: np.ndarray, class_names: Sequence[str],
                   path, title: str = "test") -> None:
  """The confusion matrix, each row (true class) normalised to sum 1."""
  cm = np.asarray(confusion, np.float64)
  rows = cm.sum(axis=1, keepdims=True)
  norm = np.divide(cm, rows, out=np.zeros_like(cm), where=rows > 0)
  n = len(class_names)
  fig = Figure(figsize=(2.0 + 0.55 * n, 1.6 + 0.5 * n))
  ax = fig.subplots()
  image = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
  for i in range(n):
    for j in range(n):
      if norm[i, j] >= 0.005:
        ax.text(j, i, f"{norm[i, j]:.2f}", ha="center", va="center",
                fontsize=7, color="white" if norm[i, j] > 0.5 else "black")
  ax.set_xticks(range(n), class_names, rotation=45, ha="right", fontsize=8)
  ax.set_yticks(range(n), class_names, fontsize=8)
  ax.set_xlabel("predicted")
  ax.set_ylabel("true (fine label)")
  ax.set_title(f"{title}: confusion, rows normalised", fontsize=9)
  fig.colorbar(image, ax=ax, fraction=0.046)
  fig.tight_layout()
  save_figure(fig, path)


def save_sample_arrays(samples: Sequence[Dict[str, np.ndarray]], path) -> None:
  """The samples' arrays as one .npz (keys `<name>_<i>`)."""
  arrays = {f"{k}_{i}": np.asarray(v) for i, s in enumerate(samples)
            for k, v in s.items()}
  buffer = io.BytesIO()
  np.savez_compressed(buffer, num_samples=len(samples), **arrays)
  filesystem.write_bytes(path, buffer.getvalue())


def load_sample_arrays(path) -> List[Dict[str, np.ndarray]]:
  """What `save_sample_arrays` wrote."""
  with filesystem.path(path).open("rb") as f:
    z = dict(np.load(io.BytesIO(f.read())))
  out = [{} for _ in range(int(z.pop("num_samples")))]
  for key, value in z.items():
    name, i = key.rsplit("_", 1)
    out[int(i)][name] = value
  return out


def save_all(workdir: str, samples, records, num_classes: int,
             class_names: Optional[Sequence[str]] = None,
             confusion: Optional[np.ndarray] = None) -> None:
  """Every figure of a finished run into `workdir/figures/`."""
  out_dir = filesystem.path(workdir) / "figures"
  names = list(class_names or [str(c) for c in range(num_classes)])
  save_samples(samples, out_dir, num_classes, names)
  save_curves(records, out_dir / "curves.png")
  if confusion is not None:
    save_confusion(confusion, names, out_dir / "confusion.png")
  save_sample_arrays(samples, out_dir / "samples.npz")
