"""Refined training labels: the output of `--mode=refine` as a label source.

`--config.data.train_labels=refined --config.data.refined_dir=R` trains on
the dense labels that `--mode=refine --split=<train_split> --output_dir=R`
wrote (self-training: one model fills the band its coarse labels leave
unlabelled, a second one learns from the filled labels). R holds

  refine_<split>.json   the report: which workdir and checkpoint step refined,
                        the split and dataset, min_confidence;
  refine_<split>.csv    one row per image: `stem` (the label PNG's name),
                        `source` (the example id), `height`, `width`;
  <stem>.png            uint8 class ids at the stored image's size (255 =
                        left unlabelled below min_confidence): the fill the
                        report's `chosen` names;
  fills/<fill>/<stem>.png  every fill's labels, of the same images.

`--config.data.refined_fill=F` trains on fill F (`fills/F/`) instead of the
chosen one (`""`, the default); `best_free` is resolved, where the config is
checked, to the free fill the report's coarse-only scores rank first
(`coarse_only_scores`).

`provenance` reads the report into the one-line `data.refined_from` that
config.json records; `manifest` maps example ids to label files;
`check_split` checks, before training, that every example of the split has a
label file of its size; `label_reader` reads the PNGs by example id as TF
ops (the input pipeline's), so the labels go through the same augmentation
as stored ones. Any file system `tf.io` reads (gs:// included).
"""

import csv
import io
import json
import os
from typing import Dict, Iterable, Tuple

import tensorflow as tf

from coarseseg_jax import errors


def report_path(refined_dir: str, split: str) -> str:
  return os.path.join(refined_dir, f"refine_{split}.json")


def manifest_path(refined_dir: str, split: str) -> str:
  """The per-image CSV of a refine output (what `manifest` reads)."""
  return os.path.join(refined_dir, f"refine_{split}.csv")


def _refine_hint(refined_dir: str, split: str) -> str:
  return (f"write it with `python -m coarseseg_jax.main --workdir=W "
          f"--mode=refine --split={split} --output_dir={refined_dir}`")


def _read_report(refined_dir: str, split: str) -> dict:
  """The refine report of `split` (ConfigError naming it if it is missing
  or no report)."""
  path = report_path(refined_dir, split)
  try:
    with tf.io.gfile.GFile(path) as f:
      report = json.load(f)
    if not isinstance(report, dict):
      raise ValueError
    return report
  except tf.errors.NotFoundError:
    raise errors.ConfigError(
        f"{path}: not found (config.data.refined_dir); "
        f"{_refine_hint(refined_dir, split)}.") from None
  except ValueError:
    raise errors.ConfigError(
        f"{path}: not a refine report; {_refine_hint(refined_dir, split)}."
    ) from None


def coarse_only_scores(refined_dir: str, split: str) -> Dict[str, dict]:
  """{fill: figures} of the report's coarse-only score (the held-out ring),
  what `refine.scores.choose` ranks (ConfigError if the report has none:
  written before the fills were scored)."""
  scores = _read_report(refined_dir, split).get("coarse_only", {})
  if not isinstance(scores, dict) or not isinstance(
      scores.get("methods"), dict):
    raise errors.ConfigError(
        f"{report_path(refined_dir, split)}: no coarse-only scores of the "
        f"fills; {_refine_hint(refined_dir, split)} again.")
  return scores["methods"]


def provenance(refined_dir: str, split: str, dataset: str,
               fill: str = "") -> str:
  """`data.refined_from`: the workdir, step and fill that refined `split`
  (`fill`: the one read, `data.refined_fill`; "" the report's chosen one).

  Raises:
    errors.ConfigError: no report for `split` in `refined_dir`, or one of
      another split or dataset (one line naming the file).
  """
  path = report_path(refined_dir, split)
  report = _read_report(refined_dir, split)
  try:
    source = report["source"]
    workdir, step = report["workdir"], report["checkpoint_step"]
  except (KeyError, TypeError):
    raise errors.ConfigError(
        f"{path}: not a refine report; {_refine_hint(refined_dir, split)}."
    ) from None
  if source.get("split") != split or source.get("dataset") != dataset:
    raise errors.ConfigError(
        f"{path}: refines {source.get('dataset')}/{source.get('split')}, not "
        f"{dataset}/{split}; {_refine_hint(refined_dir, split)}.")
  line = (f"{workdir} step {step} min_confidence "
          f"{report.get('min_confidence', 0.0)}")
  if fill:
    return f"{line} fill {fill}"
  chosen = report.get("chosen")  # Reports before the fills had one fill.
  return f"{line} fill {chosen['method']}" if chosen else line


def manifest(refined_dir: str, split: str, fill: str = ""
             ) -> Dict[str, Tuple[str, int, int]]:
  """Example id -> (label PNG path, height, width), from refine_<split>.csv;
  the PNGs of `fill` (`fills/<fill>/`) or, for "", the chosen fill's.

  Raises:
    errors.DatasetError: the CSV is missing or lacks its columns.
  """
  path = manifest_path(refined_dir, split)
  try:
    with tf.io.gfile.GFile(path) as f:
      rows = list(csv.DictReader(io.StringIO(f.read())))
    where = os.path.join(refined_dir, "fills", fill) if fill else refined_dir
    return {r["source"]: (os.path.join(where, r["stem"] + ".png"),
                          int(r["height"]), int(r["width"])) for r in rows}
  except tf.errors.NotFoundError:
    raise errors.DatasetError(
        f"{path}: not found; {_refine_hint(refined_dir, split)}.") from None
  except (KeyError, ValueError, TypeError):
    raise errors.DatasetError(
        f"{path}: no per-image rows (stem, source, height, width); "
        f"{_refine_hint(refined_dir, split)}.") from None


def label_reader(refined_dir: str, split: str, fill: str = ""):
  """The refined labels as TF ops for the input pipeline:
  `read(id, coarse) -> int32 (H, W)`, the refined label (of `fill`,
  `manifest`) of a `split` example by its id, the `coarse` label for other
  examples (the validation images that fine-tuning adds)."""
  files = manifest(refined_dir, split, fill)
  ids = sorted(files)
  table = tf.lookup.StaticHashTable(tf.lookup.KeyValueTensorInitializer(
      tf.constant(ids, tf.string),
      tf.constant([files[i][0] for i in ids], tf.string)), default_value="")

  def read(ident, coarse):
    path = table.lookup(ident)
    return tf.cond(path == "", lambda: coarse, lambda: tf.cast(
        tf.io.decode_png(tf.io.read_file(path), channels=1,
                         dtype=tf.uint8), tf.int32)[..., 0])

  return read


def check_split(shapes: Iterable[Tuple[str, int, int]], split: str,
                refined_dir: str, fill: str = "") -> None:
  """Checks that every example of `split` has a refined label of its size.

  Args:
    shapes: (example id, height, width) of every stored example of `split`
      (`input_pipeline.example_shapes`: nothing is decoded).
    split: the split's name, for messages and the report's name.
    refined_dir: `data.refined_dir`.
    fill: `data.refined_fill` (resolved: a fill's name, or "").

  Raises:
    errors.DatasetError: an example without a refined label, a label of
      another size, or a listed PNG that is missing (naming the first).
  """
  files = manifest(refined_dir, split, fill)
  for ident, h, w in shapes:
    if ident not in files:
      raise errors.DatasetError(
          f"{refined_dir}: no refined label for example {ident!r} of "
          f"{split!r}; {_refine_hint(refined_dir, split)} again.")
    path, rh, rw = files[ident]
    if (rh, rw) != (h, w):
      raise errors.DatasetError(
          f"{path}: {rh} x {rw}, but example {ident!r} is {h} x {w}; it was "
          f"refined from another version of the dataset: "
          f"{_refine_hint(refined_dir, split)} again.")
    if not tf.io.gfile.exists(path):
      raise errors.DatasetError(f"{path}: missing (listed in refine_{split}"
                                f".csv); {_refine_hint(refined_dir, split)}.")
