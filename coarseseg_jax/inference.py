"""Using a trained checkpoint: evaluation on a split and prediction on images.

`python -m coarseseg_jax.main --mode=eval --split=test` and `--mode=predict
--input_dir=... --output_dir=...` call these. Both read and write through the
workdir's path abstraction (local paths or gs:// URLs).

Prediction takes images of any size: each is padded (bottom/right, zeros) to
a bucket shape (`bucket_shape`: sides rounded up on a ladder of multiples of
16, at most 25 % larger), images of one bucket are predicted in batches of
`config.data.eval_batch_size`, and each label map is cropped back and written
at its image's size. So a folder of photos of many sizes compiles once per
bucket, not once per size. A file that cannot be read is skipped with a
warning naming it; the rest are predicted.
"""

import dataclasses
import logging
import os
from typing import Dict, Iterator, List, Tuple

import jax
import numpy as np
import tqdm

from coarseseg_jax import config_validation
from coarseseg_jax import datasets
from coarseseg_jax import errors
from coarseseg_jax import evaluate
from coarseseg_jax import figures
from coarseseg_jax import filesystem
from coarseseg_jax import state as state_lib
from coarseseg_jax.datasets import items

log = logging.getLogger(__name__)
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


def evaluate_checkpoint(config, workdir: str, split: str,
                        which: str = "best") -> dict:
  """Evaluates a checkpoint on `split` (the dataset prepared first if it is
  not, as training does); writes `workdir/eval_<split>.json`:
  `split`, `step` and the result under results.json's key names with the
  split's name for "test" (`EvalResult.to_json`)."""
  if which == "pretrained" and config.model.pretrained:
    builder = config_validation.validate(config)  # Resolves num_classes.
  else:  # The workdir's config.json, checked and completed by training.
    builder = datasets.get_builder(config.data, config.model.num_classes)
  # As training does: prepared here if it is not (e.g. on a new machine).
  builder = datasets.prepare_on_hosts(builder, config.data,
                                      config.model.num_classes)
  state, model, mesh, step = state_lib.restore_for_inference(config, workdir,
                                                            which)
  evaluator = evaluate.Evaluator(model, config.model.num_classes, mesh,
                                 datasets.class_names(builder))
  result = evaluator.evaluate_split(state_lib.variables(state), builder,
                                    config.data, split, full=True)
  out = {"split": split, "step": step, **result.to_json(split)}
  if jax.process_index() == 0:
    filesystem.write_json(filesystem.path(workdir) / f"eval_{split}.json",
                           out)
  return out


def bucket_side(n: int) -> int:
  """The smallest ladder size >= n: multiples of 16 of the form
  m * 2^k with m in {4, 5, 6, 7}, i.e. 64, 80, 96, 112, 128, 160, 192, 224,
  256, 320, ..., so padding adds at most 25 % per side."""
  side = 64
  while side < n:
    k = side.bit_length() - 3  # side = m * 2^k with m in 4..7
    side += 1 << k
  return side


def bucket_shape(height: int, width: int) -> Tuple[int, int]:
  """The padded (height, width) an image of this size is predicted at."""
  return bucket_side(height), bucket_side(width)


@dataclasses.dataclass
class PredictReport:
  """What `predict_folder` did."""
  written: List[str]   # Input files whose predictions were written.
  skipped: List[Tuple[str, str]]  # (input file, why).
  output_dir: str
  buckets: Dict[Tuple[int, int], int]  # Bucket shape -> images.


def _list_inputs(input_dir: str, report: PredictReport) -> List[str]:
  root = filesystem.path(input_dir)
  if not root.is_dir():
    raise errors.DatasetError(f"{input_dir}: input folder not found.")
  paths = []
  for p in sorted(root.iterdir(), key=lambda q: q.name):
    if p.name.startswith(".") or p.is_dir():
      continue
    if p.suffix.lower() in IMAGE_EXTENSIONS:
      paths.append(str(p))
    else:
      report.skipped.append((str(p), "not an image file "
                             f"({', '.join(IMAGE_EXTENSIONS)})"))
      log.warning("skipped %s: not an image file.", p)
  return paths


def _read(paths: List[str], report: PredictReport
          ) -> Iterator[Tuple[str, np.ndarray]]:
  """(path, uint8 RGB image) of each readable file, with a progress bar."""
  for p in tqdm.tqdm(paths, desc="predict", unit="image", mininterval=2):
    try:
      yield p, items.read_image(p)
    except errors.DatasetError as e:
      report.skipped.append((p, str(e)))
      log.warning("skipped %s", e)


def _out_names(paths: List[str]) -> Dict[str, str]:
  """Input path -> output stem (the file's stem; + extension if shared)."""
  stems = [os.path.splitext(os.path.basename(p)) for p in paths]
  count: Dict[str, int] = {}
  for stem, _ in stems:
    count[stem] = count.get(stem, 0) + 1
  return {p: stem if count[stem] == 1 else f"{stem}_{ext.lstrip('.')}"
          for p, (stem, ext) in zip(paths, stems)}


def predict_folder(config, workdir: str, input_dir: str,
                   output_dir: str) -> PredictReport:
  """Writes `<stem>.png` (uint8 class ids, the image's size) and
  `<stem>_overlay.png` for every image in `input_dir` (see the module
  docstring); unreadable files are skipped and listed in the report."""
  report = PredictReport([], [], output_dir, {})
  paths = _list_inputs(input_dir, report)
  if not paths:
    raise errors.DatasetError(
        f"{input_dir}: no images ({', '.join(IMAGE_EXTENSIONS)}).")
  state, model, _, _ = state_lib.restore_for_inference(config, workdir)
  variables = state_lib.variables(state)
  model_predict = evaluate.make_predict_fn(model)

  @jax.jit
  def predict_labels(variables, images):
    return model_predict(variables, images)[0]

  batch_size = int(config.data.eval_batch_size)
  out_root = filesystem.path(output_dir)
  names = _out_names(paths)
  num_classes = config.model.num_classes
  pending: Dict[Tuple[int, int], List[Tuple[str, np.ndarray]]] = {}

  def flush(shape):
    group = pending.pop(shape)
    batch = np.zeros((batch_size,) + shape + (3,), np.float32)
    for i, (_, image) in enumerate(group):
      batch[i, :image.shape[0], :image.shape[1]] = image / 255.0
    preds = np.asarray(predict_labels(variables, batch)).astype(np.uint8)
    for (path, image), pred in zip(group, preds):
      h, w = image.shape[:2]
      label = pred[:h, :w]
      stem = names[path]
      filesystem.write_bytes(out_root / f"{stem}.png",
                              items.encode_png(label))
      overlay = 0.5 * image / 255.0 + 0.5 * figures.colorize(label,
                                                             num_classes)
      filesystem.write_bytes(
          out_root / f"{stem}_overlay.png",
          items.encode_png((np.clip(overlay, 0, 1) * 255).astype(np.uint8)))
      report.written.append(path)

  for path, image in _read(paths, report):
    shape = bucket_shape(*image.shape[:2])
    report.buckets[shape] = report.buckets.get(shape, 0) + 1
    pending.setdefault(shape, []).append((path, image))
    if len(pending[shape]) == batch_size:
      flush(shape)
  for shape in list(pending):
    flush(shape)
  return report
