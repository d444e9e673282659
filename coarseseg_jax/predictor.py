"""The one predictor behind `--mode=eval`, `--mode=predict` and `--mode=refine`.

`restore` loads a workdir's checkpoint for inference (its model, variables,
mesh and step). `batched` runs a jitted function over images of any size:
each image (and the arrays that go with it, e.g. a coarse label) is padded
bottom/right to a bucket shape (`bucket_shape`: sides rounded up on a ladder
of multiples of 16, at most 25 % larger), images of one bucket go through
`fn` in batches of a fixed size, and each output is cropped back to its
image's size. So a folder of photos of many sizes compiles once per bucket,
not once per size. `overlay_png` draws a label map over its image, as
predict and refine write it.

`predict_folder` is `--mode=predict`: a label PNG and an overlay for every
image in a folder, reading and writing through `filesystem` (local paths or
gs:// URLs); a file that cannot be read is skipped with a warning naming
it, and the rest are predicted.
"""

import dataclasses
import logging
import os
from typing import (Any, Callable, Dict, Iterable, Iterator, List, Sequence,
                    Tuple)

import jax
import numpy as np
import tqdm

from coarseseg_jax import errors
from coarseseg_jax import evaluate
from coarseseg_jax import figures
from coarseseg_jax import filesystem
from coarseseg_jax import state as state_lib
from coarseseg_jax.datasets import items

log = logging.getLogger(__name__)
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


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
class Restored:
  """A checkpoint ready for inference (`restore`)."""
  model: Any
  variables: Any   # {"params": ..., "batch_stats": ...}
  mesh: Any
  step: int


def restore(config, workdir: str, which: str = "best") -> Restored:
  """The workdir's checkpoint `which` (best | latest | pretrained), for a
  config checked and completed by `config_validation.resolve`; one-line
  `CheckpointError` if it is missing or damaged."""
  state, model, mesh, step = state_lib.restore_for_inference(config, workdir,
                                                            which)
  return Restored(model, state_lib.variables(state), mesh, step)


def batched(examples: Iterable[Tuple[Any, Sequence[np.ndarray]]],
            fn: Callable, variables, batch_size: int,
            pad_values: Sequence[float]
            ) -> Iterator[Tuple[Any, Tuple[np.ndarray, ...]]]:
  """Runs `fn` over examples of any size, batched by bucket shape.

  Args:
    examples: (key, arrays): arrays[i] of shape (H, W, ...) for one image,
      all of one H, W (e.g. the image (H, W, 3) float in [0, 1] and its
      coarse label (H, W)).
    fn: (variables, batch of arrays[0], batch of arrays[1], ...) -> a tuple
      of arrays (B, Hb, Wb, ...) at the batch's (bucket) resolution; jitted.
    variables: the model's variables, passed to `fn` as its first argument
      (a jitted function that closed over them would compile them into its
      program as constants).
    batch_size: B, fixed, so each bucket compiles once (a short last batch is
      padded with empty images).
    pad_values: what each input is padded with.

  Yields:
    (key, outputs cropped to (H, W, ...)), in the order the buckets fill (an
    example waits until its bucket holds `batch_size` or the input ends).
  """
  pending: Dict[Tuple[int, int], List] = {}

  def flush(shape):
    group = pending.pop(shape)
    batch = []
    for j, pad in enumerate(pad_values):
      x = group[0][1][j]
      b = np.full((batch_size,) + shape + x.shape[2:], pad, x.dtype)
      for i, (_, arrays) in enumerate(group):
        a = arrays[j]
        b[i, :a.shape[0], :a.shape[1]] = a
      batch.append(b)
    out = jax.device_get(fn(variables, *batch))
    for i, (key, arrays) in enumerate(group):
      h, w = arrays[0].shape[:2]
      yield key, tuple(np.asarray(o[i, :h, :w]) for o in out)

  for key, arrays in examples:
    if len(arrays) != len(pad_values):
      raise ValueError(f"{len(arrays)} arrays, {len(pad_values)} pad values.")
    shape = bucket_shape(*arrays[0].shape[:2])
    pending.setdefault(shape, []).append((key, arrays))
    if len(pending[shape]) == batch_size:
      yield from flush(shape)
  for shape in list(pending):
    yield from flush(shape)


def overlay_png(image: np.ndarray, mask: np.ndarray, num_classes: int
                ) -> bytes:
  """PNG bytes of `mask` (H, W) class ids blended half over `image` (H, W,
  3) uint8; 255 (unlabelled) drawn as in `figures.colorize`."""
  overlay = 0.5 * image / 255.0 + 0.5 * figures.colorize(mask, num_classes)
  return items.encode_png((np.clip(overlay, 0, 1) * 255).astype(np.uint8))


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
  restored = restore(config, workdir)
  model_predict = evaluate.make_predict_fn(restored.model)

  @jax.jit
  def predict_labels(variables, images):
    return (model_predict(variables, images)[0].astype(np.uint8),)

  out_root = filesystem.path(output_dir)
  names = _out_names(paths)
  num_classes = config.model.num_classes

  def examples():
    for path, image in _read(paths, report):
      shape = bucket_shape(*image.shape[:2])
      report.buckets[shape] = report.buckets.get(shape, 0) + 1
      yield (path, image), (image.astype(np.float32) / 255.0,)

  for (path, image), (label,) in batched(
      examples(), predict_labels, restored.variables,
      int(config.data.eval_batch_size), (0.0,)):
    stem = names[path]
    filesystem.write_bytes(out_root / f"{stem}.png", items.encode_png(label))
    filesystem.write_bytes(out_root / f"{stem}_overlay.png",
                           overlay_png(image, label, num_classes))
    report.written.append(path)
  return report
