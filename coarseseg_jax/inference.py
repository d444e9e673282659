"""Using a trained checkpoint: evaluation on a split and prediction on images.

`python -m coarseseg_jax.main --mode=eval --split=test` and `--mode=predict
--input_dir=... --output_dir=...` call these.
"""

import glob
import json
import os
from typing import Tuple

import jax
import jax.numpy as jnp
import numpy as np
from skimage import io as skio

from coarseseg_jax import checkpoints
from coarseseg_jax import datasets
from coarseseg_jax import errors
from coarseseg_jax import figures
from coarseseg_jax import input_pipeline
from coarseseg_jax import models
from coarseseg_jax import sharding
from coarseseg_jax import train

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


def load_state(config, workdir: str, which: str = "best"):
  """Restores the `best` (falling back to `latest`) or `latest` train state.

  Returns `(state, model, mesh, step)`.
  """
  mesh = sharding.make_mesh()
  model = models.create_model(config.model)
  state = train.create_train_state(config, model, mesh, config.data.crop_size)
  order = ("best", "checkpoints") if which == "best" else ("checkpoints",)
  for sub in order:
    ckpt = checkpoints.Checkpointer(os.path.join(workdir, sub), 1)
    if ckpt.latest_step() is not None:
      state, _ = ckpt.restore(state)
      ckpt.close()
      return state, model, mesh, int(jax.device_get(state.step))
    ckpt.close()
  raise errors.CheckpointError(
      f"no checkpoint under {os.path.join(workdir, order[0])}: train first "
      "(--mode=train) with this --workdir.")


def evaluate_checkpoint(config, workdir: str, split: str,
                        which: str = "best") -> dict:
  """Evaluates a checkpoint on `split`; writes `workdir/eval_<split>.json`."""
  from coarseseg_jax import evaluate  # pylint: disable=g-import-not-at-top
  state, model, mesh, step = load_state(config, workdir, which)
  builder = datasets.get_builder(config.data, config.model.num_classes)
  eval_step = jax.jit(evaluate.make_eval_step(model, config.model.num_classes))
  batches = input_pipeline.create_eval_iterator(
      builder, config.data, split, config.data.eval_batch_size)
  summary, rows, _ = evaluate.evaluate(
      eval_step, {"params": state.params, "batch_stats": state.batch_stats},
      batches, mesh, full=True)
  result = {"split": split, "step": step, "summary": summary,
            "per_image": rows}
  if jax.process_index() == 0:
    with open(os.path.join(workdir, f"eval_{split}.json"), "w") as f:
      json.dump(result, f, indent=1)
  return result


def _read_rgb(path: str) -> np.ndarray:
  try:
    image = skio.imread(path)
  except Exception as e:  # pylint: disable=broad-except
    raise errors.DatasetError(f"{path}: cannot read the image ({e}).") from None
  if image.ndim == 2:
    image = np.stack([image] * 3, axis=-1)
  if image.ndim != 3 or image.shape[-1] not in (3, 4):
    raise errors.DatasetError(f"{path}: expected an RGB image, got shape {image.shape}.")
  return image[..., :3]


def pad_to_multiple(image: np.ndarray, multiple: int = 16) -> np.ndarray:
  """Pads (H, W, C) bottom/right with zeros to sides divisible by `multiple`."""
  h, w = image.shape[:2]
  ph, pw = -h % multiple, -w % multiple
  return np.pad(image, ((0, ph), (0, pw), (0, 0)))


def predict_folder(config, workdir: str, input_dir: str,
                   output_dir: str) -> Tuple[int, str]:
  """Writes `<stem>.png` (uint8 class ids) and `<stem>_overlay.png` for every
  image in `input_dir`. Returns (number of images, output_dir)."""
  paths = sorted(p for p in glob.glob(os.path.join(input_dir, "*"))
                 if p.lower().endswith(IMAGE_EXTENSIONS))
  if not paths:
    raise errors.DatasetError(f"{input_dir}: no images ({IMAGE_EXTENSIONS}).")
  state, model, _, _ = load_state(config, workdir)
  variables = {"params": state.params, "batch_stats": state.batch_stats}

  @jax.jit
  def predict(variables, image):
    logits, _ = model.apply(variables, image[None], train=False)
    return jnp.argmax(logits[0], axis=-1).astype(jnp.uint8)

  os.makedirs(output_dir, exist_ok=True)
  for path in paths:
    image = _read_rgb(path)
    h, w = image.shape[:2]
    x = pad_to_multiple(image.astype(np.float32) / 255.0)
    pred = np.asarray(predict(variables, jnp.asarray(x)))[:h, :w]
    stem = os.path.splitext(os.path.basename(path))[0]
    skio.imsave(os.path.join(output_dir, f"{stem}.png"), pred,
                check_contrast=False)
    overlay = 0.5 * image / 255.0 + 0.5 * figures.colorize(
        pred, config.model.num_classes)
    skio.imsave(os.path.join(output_dir, f"{stem}_overlay.png"),
                (np.clip(overlay, 0, 1) * 255).astype(np.uint8),
                check_contrast=False)
  return len(paths), output_dir
