r"""What `--mode=refine` reports, and the refine table and figure.

`Accumulator` gathers, per image and per method (the fills of
`refine.fills`), the pixel counts (labelled, filled, left at 255) and, where
fine labels exist, the figures of `refine.scores.mask_metrics`; `summarize`
turns them into the report (`refine_<name>.json`; the driver adds `chosen`
and `coarse_only`, the same figures of the held-out ring):

  pixels          total, labelled (coarse), band (unlabelled), band pixels
                  with a fine label
  labelled_share  labelled / total
  methods.<m>     filled_share, left_share (of all pixels); with fine labels:
                  band_accuracy (pooled over the filled band pixels),
                  band_accuracy_mean, band_correct (right class / band
                  pixels with a fine label: unfilled ones count as wrong),
                  boundary_recall_mean / _std (the paper's), boundary_f1_mean
                  / _std, and per_class (band accuracy and IoU from the
                  pooled band confusion, `evaluate.per_class_results`;
                  boundary recall and F1 of "class c" against the rest,
                  mean over the images holding c and another class)

`refine_<name>.csv` holds one row per image. NaN (nothing to measure) is
written as null / an empty cell. `staged_output` gives a run a temporary
folder beside its output folder, moved into place only when the run ends
well. `markdown_table` and `per_class_table` format reports for the
README (`refine.figures`).
"""

import contextlib
import csv
import io
import json
import os
import shutil
import tempfile
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from coarseseg_jax import errors
from coarseseg_jax import refine
from coarseseg_jax.labels import IGNORE_LABEL

METHODS = refine.FILLS
METHOD_NAMES = {
    "nearest_labelled": "nearest labelled pixel",
    "slic_propagation": "SLIC propagation",
    "slic_then_nearest": "SLIC propagation, then nearest",
    "model": "model",
    "constrained": "model among classes within reach",
    "superpixel": "learned-superpixel propagation",
    "superpixel_constrained": "model x learned superpixels, within reach",
    "slic_sure_constrained": "SLIC where sure, else constrained model"}
_IMAGE_FIGURES = ("band_accuracy", "band_correct", "boundary_recall",
                  "boundary_f1")


def _clean(x):
  """JSON-safe: NaN -> None, NumPy scalars -> Python."""
  if isinstance(x, dict):
    return {k: _clean(v) for k, v in x.items()}
  if isinstance(x, (list, tuple)):
    return [_clean(v) for v in x]
  if isinstance(x, (float, np.floating)):
    return None if not np.isfinite(x) else float(x)
  if isinstance(x, np.integer):
    return int(x)
  return x


def _ratio(num, den) -> float:
  return float(num) / float(den) if den else float("nan")


class Accumulator:
  """Per-image counts and figures of each method (see the module docstring).

  Args:
    methods: method names, in report order.
    num_classes: C.
    class_names: names of the C classes (default "0", "1", ...).
  """

  def __init__(self, methods: Sequence[str], num_classes: int,
               class_names: Optional[Sequence[str]] = None):
    self.methods, self.num_classes = tuple(methods), num_classes
    self.class_names = (list(class_names) if class_names
                        else [str(c) for c in range(num_classes)])
    self._rows: List[dict] = []
    self._pixels = {"total": 0, "labelled": 0, "band": 0, "band_fine": 0}
    zeros = lambda: np.zeros((num_classes, num_classes), np.int64)
    self._m = {m: {"filled": 0, "left": 0, "confusion": zeros(),
                   "class_recall": [], "class_f1": [], "class_present": []}
               for m in self.methods}
    self.with_fine = None

  def add(self, stem: str, source: str, coarse: np.ndarray,
          fine: Optional[np.ndarray], masks: Dict[str, np.ndarray],
          figures: Optional[Dict[str, Dict[str, np.ndarray]]]) -> None:
    """One image: (H, W) coarse (and fine) labels, each method's (H, W)
    refined mask, and its `refine.mask_metrics` (one image's slices) or
    None without fine labels."""
    band = coarse == IGNORE_LABEL
    band_fine = int(np.count_nonzero(band & (fine != IGNORE_LABEL))) if (
        fine is not None) else 0
    counts = {"total": coarse.size, "labelled": int(np.count_nonzero(~band)),
              "band": int(np.count_nonzero(band)), "band_fine": band_fine}
    for k, v in counts.items():
      self._pixels[k] += v
    self.with_fine = figures is not None
    row = {"stem": stem, "source": source, "height": coarse.shape[0],
           "width": coarse.shape[1],
           "labelled_share": counts["labelled"] / coarse.size}
    for m in self.methods:
      acc = self._m[m]
      filled = int(np.count_nonzero(band & (masks[m] != IGNORE_LABEL)))
      acc["filled"] += filled
      acc["left"] += counts["band"] - filled
      row[f"{m}_filled_share"] = filled / coarse.size
      row[f"{m}_left_share"] = (counts["band"] - filled) / coarse.size
      if figures is not None:
        f = figures[m]
        for k in _IMAGE_FIGURES:
          row[f"{m}_{k}"] = float(f[k])
        acc["confusion"] += f["band_confusion"].astype(np.int64)
        acc["class_recall"].append(f["class_boundary_recall"])
        acc["class_f1"].append(f["class_boundary_f1"])
        acc["class_present"].append(f["class_present"])
    self._rows.append(row)

  def rows(self) -> List[dict]:
    return list(self._rows)

  def _method(self, m: str) -> dict:
    from coarseseg_jax import evaluate  # pylint: disable=g-import-not-at-top
    acc, px = self._m[m], self._pixels
    out = {"filled_share": _ratio(acc["filled"], px["total"]),
           "left_share": _ratio(acc["left"], px["total"])}
    if not self.with_fine:
      return out
    cm = acc["confusion"]
    out["band_accuracy"] = _ratio(np.trace(cm), cm.sum())
    out["band_correct"] = _ratio(np.trace(cm), px["band_fine"])
    for k in ("band_accuracy", "boundary_recall", "boundary_f1"):
      values = np.array([r[f"{m}_{k}"] for r in self._rows], np.float64)
      finite = np.isfinite(values).any()
      out[f"{k}_mean"] = float(np.nanmean(values)) if finite else np.nan
      out[f"{k}_std"] = float(np.nanstd(values)) if finite else np.nan
    present = np.array(acc["class_present"], bool)
    per_class = evaluate.per_class_results(cm, self.class_names)
    for key, name in (("class_recall", "boundary_recall"),
                      ("class_f1", "boundary_f1")):
      values = np.where(present, np.array(acc[key], np.float64), np.nan)
      for c, cls in enumerate(self.class_names):
        column = values[:, c]
        per_class[cls][name] = (float(np.nanmean(column))
                                if np.isfinite(column).any() else np.nan)
    for cls, figures in per_class.items():
      figures["band_accuracy"] = figures.pop("accuracy")
      figures["band_iou"] = figures.pop("iou")
      figures["band_pixels"] = figures.pop("pixels")
      figures["images"] = int(present[:, self.class_names.index(cls)].sum())
    out["per_class"] = per_class
    return out

  def summarize(self, *, name: str, workdir: str, step: int, source: dict,
                min_confidence: float) -> dict:
    """The report (see the module docstring)."""
    px = self._pixels
    return _clean({
        "name": name, "workdir": workdir, "checkpoint_step": step,
        "source": source, "min_confidence": min_confidence,
        "num_images": len(self._rows), "fine_labels": bool(self.with_fine),
        "class_names": self.class_names, "pixels": dict(px),
        "labelled_share": _ratio(px["labelled"], px["total"]),
        "methods": {m: self._method(m) for m in self.methods},
        "per_image_csv": f"refine_{name}.csv"})


def _staging(output_dir: str) -> str:
  """A new temporary folder beside `output_dir` (ConfigError if it cannot
  be made)."""
  out = os.path.abspath(os.path.expanduser(output_dir))
  if "://" in output_dir:
    raise errors.ConfigError(f"--output_dir={output_dir}: refine writes to "
                             "local folders only.")
  if os.path.exists(out) and not os.path.isdir(out):
    raise errors.ConfigError(f"{output_dir}: exists and is not a folder.")
  try:
    os.makedirs(os.path.dirname(out), exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(out)}.partial-",
                           dir=os.path.dirname(out))
  except OSError as e:
    raise errors.ConfigError(
        f"{output_dir}: cannot be written ({e.strerror}).") from None
  umask = os.umask(0)
  os.umask(umask)
  os.chmod(tmp, 0o777 & ~umask)
  return tmp


def _commit(tmp: str, output_dir: str) -> None:
  """Moves the staged files into `output_dir` (renamed whole if new; else
  file by file, the report last)."""
  out = os.path.abspath(os.path.expanduser(output_dir))
  if not os.path.exists(out):
    os.rename(tmp, out)
    return
  names = sorted(os.listdir(tmp), key=lambda n: (n.endswith(".json"), n))
  for name in names:
    os.replace(os.path.join(tmp, name), os.path.join(out, name))
  os.rmdir(tmp)


@contextlib.contextmanager
def staged_output(output_dir: str) -> Iterator[str]:
  """Yields a new temporary folder beside `output_dir` to write into; at the
  end its files are moved into `output_dir`, and on any error it is removed,
  so an interrupted or failed run leaves no partial output."""
  tmp = _staging(output_dir)
  try:
    yield tmp
    _commit(tmp, output_dir)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise


def write(report: dict, rows: List[dict], out_dir: str,
          name: str) -> Tuple[str, str]:
  """Writes `refine_<name>.csv` and `.json` into `out_dir`; their names."""
  csv_name, json_name = f"refine_{name}.csv", f"refine_{name}.json"
  if rows:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
    writer.writeheader()
    for row in rows:
      writer.writerow({k: "" if isinstance(v, float) and not np.isfinite(v)
                       else v for k, v in row.items()})
    with open(os.path.join(out_dir, csv_name), "w", newline="") as f:
      f.write(buf.getvalue())
  with open(os.path.join(out_dir, json_name), "w") as f:
    json.dump(report, f, indent=1)
    f.write("\n")
  return csv_name, json_name


def _fmt(x, digits: int = 3) -> str:
  return "-" if x is None else f"{x:.{digits}f}"


def summary_line(report: dict, output_dir: str) -> str:
  """The one terminal line of a refine run."""
  m = report["methods"]
  chosen = report["chosen"]["method"]
  written = m[chosen]
  line = (f"refined {report['num_images']} images ({report['name']}) into "
          f"{output_dir} with {chosen} ("
          + ("chosen by the coarse-only score" if report["chosen"][
              "refine_method"] == "auto" else "--refine_method")
          + f"): {100 * report['labelled_share']:.1f} % of pixels "
          f"labelled, {100 * written['filled_share']:.1f} % filled, "
          f"{100 * written['left_share']:.1f} % left at 255")
  if report["fine_labels"]:
    parts = [f"{METHOD_NAMES[k]} {_fmt(v['band_accuracy'])} / "
             f"{_fmt(v['boundary_recall_mean'])} / "
             f"{_fmt(v['boundary_f1_mean'])}" for k, v in m.items()
             if k == chosen or k in refine.FREE_FILLS]
    line += ("; band accuracy / boundary recall / boundary F1: "
             + ", ".join(parts))
  else:
    line += "; baselines fill " + ", ".join(
        f"{METHOD_NAMES[k]} {100 * v['filled_share']:.1f} %"
        for k, v in m.items() if k in refine.FREE_FILLS)
  path = os.path.join(output_dir, f"refine_{report['name']}.json")
  return f"{line}; report {path}"


def table_rows(reports: Sequence[dict]) -> List[Tuple[str, dict]]:
  """(label, figures) of every method of the first report, and of the model
  of the others (other `min_confidence`s on the same images)."""
  rows = []
  for i, report in enumerate(reports):
    for k, v in report["methods"].items():
      if i == 0 or k == "model":
        label = METHOD_NAMES[k] + (
            f" (min_confidence {report['min_confidence']:g})"
            if k == "model" else "")
        rows.append((label, v))
  return rows


def markdown_table(reports: Sequence[dict]) -> str:
  """`table_rows` as a Markdown table."""
  lines = ["| method | filled | left at 255 | band accuracy (filled) | band "
           "correct (all) | boundary recall (paper) | boundary F1 |",
           "|---|---:|---:|---:|---:|---:|---:|"]
  for label, v in table_rows(reports):
    lines.append(
        f"| {label} | {100 * v['filled_share']:.1f} % | "
        f"{100 * v['left_share']:.1f} % | {_fmt(v.get('band_accuracy'))} | "
        f"{_fmt(v.get('band_correct'))} | "
        f"{_fmt(v.get('boundary_recall_mean'))} | "
        f"{_fmt(v.get('boundary_f1_mean'))} |")
  return "\n".join(lines) + "\n"


def per_class_table(report: dict) -> str:
  """Band accuracy and boundary F1 per class of each method, Markdown."""
  names = report["class_names"]
  lines = ["| method | " + " | ".join(names) + " |",
           "|---|" + "---:|" * len(names)]
  for k, v in report["methods"].items():
    cells = [f"{_fmt(v['per_class'][c]['band_accuracy'], 2)} / "
             f"{_fmt(v['per_class'][c]['boundary_f1'], 2)}" for c in names]
    lines.append(f"| {METHOD_NAMES[k]} | " + " | ".join(cells) + " |")
  return "\n".join(lines) + "\n"
