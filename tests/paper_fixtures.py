"""Tiny copies of the paper's datasets in their exact on-disk formats.

Each writer creates the download's real file types, names, folder layout and
value encodings (SUIM: JPEG images with noisy RGB-coded BMP masks; PanNuke:
float64 .npy folds of instance-id masks; Cityscapes: leftImg8bit PNGs with
gtFine/gtCoarse labelIds PNGs and their sibling files), only small, and
returns what the builder must recover from them. Contents come from
`synthetic.generate`, so they are deterministic.
"""

import json
import os

import numpy as np
from PIL import Image
from scipy import ndimage

from coarseseg_jax import models
from coarseseg_jax.datasets import synthetic
from coarseseg_jax.models import authors

# ------------------------------------------------------------------- SUIM --
SUIM_STEMS = {
    "train_val": ["d_r_122_", "d_r_5_", "f_r_1007_", "f_r_13_", "n_l_3_",
                  "w_r_24_", "w_r_8_", "f_r_520_"],
    "TEST": ["d_r_47_", "f_r_1289_"],
}
SUIM_CODES = ("BW", "HD", "PF", "WR", "RO", "RI", "FV", "SR")


def suim_colour(label: np.ndarray, rng: np.random.Generator) -> np.ndarray:
  """RGB colour code of SUIM class ids, with the files' noise added.

  Channels are 0 or 255 offset by up to +-100 on a quarter of the pixels (as
  annotation tools' anti-aliasing leaves them), never crossing 128.
  """
  bits = np.stack([(label >> 2) & 1, (label >> 1) & 1, label & 1], -1)
  clean = bits.astype(np.int32) * 255
  noise = rng.integers(0, 101, clean.shape) * (rng.random(clean.shape) < 0.25)
  return np.where(bits == 1, clean - noise, clean + noise).astype(np.uint8)


def write_suim(root, size=(96, 64), mismatched=(), class_folders=True,
               seed=0):
  """SUIM as unpacked: train_val/ and TEST/ with images/*.jpg, masks/*.bmp.

  Args:
    root: the folder to write (--manual_dir).
    size: (width, height) of every image.
    mismatched: stems whose mask is written at 1.5 x the image's size (as
      some real masks are), nearest-neighbour upscaled from the true label.
    class_folders: also write TEST/masks/<code>/<stem>.bmp binary masks, as
      in the download, which the builder must ignore.

  Returns:
    {folder: {stem: (label at the image's size, label as in the mask file)}}
  """
  w, h = size
  rng = np.random.default_rng(seed)
  out = {}
  for folder, stems in SUIM_STEMS.items():
    os.makedirs(os.path.join(root, folder, "images"), exist_ok=True)
    os.makedirs(os.path.join(root, folder, "masks"), exist_ok=True)
    out[folder] = {}
    for i, stem in enumerate(stems):
      image, label = synthetic.generate(seed, "train", i + 20 * len(out),
                                        max(w, h), 8)
      image, label = image[:h, :w], label[:h, :w]
      Image.fromarray(image).save(
          os.path.join(root, folder, "images", stem + ".jpg"), quality=95)
      file_label = label
      if stem in mismatched:
        mw, mh = int(w * 1.5), int(h * 1.5)
        rows = (np.arange(mh) * h // mh)
        cols = (np.arange(mw) * w // mw)
        file_label = label[rows][:, cols]
      Image.fromarray(suim_colour(file_label, rng)).save(
          os.path.join(root, folder, "masks", stem + ".bmp"))
      if class_folders and folder == "TEST":
        for c, code in enumerate(SUIM_CODES):
          os.makedirs(os.path.join(root, folder, "masks", code), exist_ok=True)
          Image.fromarray(((file_label == c) * 255).astype(np.uint8)).save(
              os.path.join(root, folder, "masks", code, stem + ".bmp"))
      out[folder][stem] = (label, file_label)
  return out


# ---------------------------------------------------------------- PanNuke --
PANNUKE_TISSUES = np.array(["Breast", "Colon", "Lung", "Kidney"])


def pannuke_masks(label: np.ndarray, rng: np.random.Generator) -> np.ndarray:
  """(H, W, 6) float64 masks whose types give `label` (5 = background).

  Each type channel holds instance ids 1, 2, ... of its nuclei (connected
  parts of the class), restarting in every channel, so ids repeat across
  channels; channel 5 is 1 on background.
  """
  from skimage import measure  # pylint: disable=g-import-not-at-top
  masks = np.zeros(label.shape + (6,), np.float64)
  for c in range(5):
    instances = measure.label(label == c, connectivity=1)
    masks[..., c] = instances * rng.choice([1, 3])  # Sparse, repeated ids.
  masks[..., 5] = (label == 5).astype(np.float64)
  return masks


def write_pannuke(root, n=3, size=256, seed=0, folds=(1, 2, 3)):
  """PanNuke as unpacked: 'Fold N/{images,masks}/foldN/{images,masks}.npy'.

  Images are float64 0..255 (integer-valued, as the real ones), masks float64
  instance ids; `types.npy` (tissue names) is written too and ignored.

  Returns:
    {fold: (uint8 images (n, H, W, 3), labels (n, H, W))}
  """
  rng = np.random.default_rng(seed)
  out = {}
  for fold in folds:
    images, labels, masks = [], [], []
    for i in range(n):
      image, layout = synthetic.generate(seed + fold, "test", i, size, 6)
      label = np.where(layout % 3 == 0, 5, layout)  # Plenty of background.
      label = label.astype(np.uint8)
      images.append(image)
      labels.append(label)
      masks.append(pannuke_masks(label, rng))
    img_dir = os.path.join(root, f"Fold {fold}", "images", f"fold{fold}")
    mask_dir = os.path.join(root, f"Fold {fold}", "masks", f"fold{fold}")
    os.makedirs(img_dir, exist_ok=True)
    os.makedirs(mask_dir, exist_ok=True)
    np.save(os.path.join(img_dir, "images.npy"),
            np.stack(images).astype(np.float64))
    np.save(os.path.join(img_dir, "types.npy"), PANNUKE_TISSUES[:n])
    np.save(os.path.join(mask_dir, "masks.npy"), np.stack(masks))
    out[fold] = (np.stack(images), np.stack(labels))
  return out


# ------------------------------------------------------------- Cityscapes --
# Synthetic class -> Cityscapes labelId: road, sidewalk, building, vegetation,
# sky, car, and two ignored ids (0 unlabeled, 9 parking).
CITYSCAPES_IDS = np.array([7, 8, 11, 21, 23, 26, 0, 9], np.uint8)
CITYSCAPES_TRAIN_IDS = np.array([0, 1, 2, 8, 10, 13, 255, 255], np.uint8)
CITYSCAPES_CITIES = {
    "train": {"aachen": 2, "bochum": 2, "zurich": 1, "weimar": 1},
    "val": {"frankfurt": 2, "lindau": 1},
    "train_extra": {"augsburg": 1},
}


def _coarse_ids(label_ids: np.ndarray, clash: bool) -> np.ndarray:
  """gtCoarse-like labelIds: eroded regions, 0 (unlabeled) elsewhere.

  With `clash`, a 6 x 6 patch inside a road/sidewalk region gets the other
  one's id, as hand-drawn polygons sometimes overlap a neighbour.
  """
  coarse = np.zeros_like(label_ids)
  for value in np.unique(label_ids):
    if value in (0, 9):
      continue
    region = ndimage.binary_erosion(label_ids == value, np.ones((7, 7)))
    coarse[region] = value
  if clash:
    ys, xs = np.nonzero(np.isin(coarse, (7, 8)))
    if ys.size:
      y, x = ys[len(ys) // 2], xs[len(xs) // 2]
      patch = coarse[y:y + 6, x:x + 6]
      patch[np.isin(patch, (7, 8))] = 15 - patch[np.isin(patch, (7, 8))]
  return coarse


def write_cityscapes(root, size=(128, 64), coarse_val=True, extra=False,
                     seed=0):
  """Cityscapes as unpacked from leftImg8bit_trainvaltest.zip,
  gtFine_trainvaltest.zip and gtCoarse.zip (+ the train_extra packages).

  Returns:
    {split: {prefix: (image, fine train ids, coarse train ids or None)}}
    with the official folder names as splits (train, val, train_extra).
  """
  w, h = size
  out = {}
  splits = ("train", "val") + (("train_extra",) if extra else ())
  for split in splits:
    out[split] = {}
    for c, (city, n) in enumerate(CITYSCAPES_CITIES[split].items()):
      for i in range(n):
        prefix = f"{city}_{c:06d}_{19 + i:06d}"
        image, layout = synthetic.generate(seed, "validation", 10 * c + i,
                                           w, 8)
        image, layout = image[:h], layout[:h]
        label_ids = CITYSCAPES_IDS[layout]
        coarse_ids = _coarse_ids(label_ids, clash=(i == 0))

        def save(kind, name, array, city=city, split=split, prefix=prefix):
          d = os.path.join(root, kind, split, city)
          os.makedirs(d, exist_ok=True)
          Image.fromarray(array).save(os.path.join(d, f"{prefix}_{name}"))

        save("leftImg8bit", "leftImg8bit.png", image)
        fine = None
        if split != "train_extra":
          fine = CITYSCAPES_TRAIN_IDS[layout]
          save("gtFine", "gtFine_labelIds.png", label_ids)
          save("gtFine", "gtFine_color.png", np.stack([label_ids] * 3, -1))
          save("gtFine", "gtFine_instanceIds.png",
               label_ids.astype(np.uint16) * 1000)
          with open(os.path.join(root, "gtFine", split, city,
                                 f"{prefix}_gtFine_polygons.json"), "w") as f:
            json.dump({"imgHeight": h, "imgWidth": w, "objects": []}, f)
        coarse_train = None
        if split != "val" or coarse_val:
          save("gtCoarse", "gtCoarse_labelIds.png", coarse_ids)
          save("gtCoarse", "gtCoarse_color.png", np.stack([coarse_ids] * 3, -1))
          lut = np.full(256, 255, np.uint8)
          lut[CITYSCAPES_IDS] = CITYSCAPES_TRAIN_IDS
          coarse_train = lut[coarse_ids]  # As drawn, clashes included.
        out[split][prefix] = (image, fine, coarse_train)
  return out


# ------------------------------------------------- the authors' weights --
def authors_state_dict(model_config, seed=0):
  """A random state dict of the authors' SegModel for `model_config`.

  Every key of their code's names (`models.authors.mapping`), PyTorch's
  layouts (OIHW kernels), running variances > 0; seeded.
  """
  shapes = models.init_shapes(model_config, image_size=64)
  rng = np.random.default_rng(seed)
  sd = {}
  for path, (key, how) in authors.mapping(shapes).items():
    shape = shapes
    for p in path:
      shape = shape[p]
    shape = shape.shape
    if how == "kernel":
      shape = (shape[3], shape[2], shape[0], shape[1])
    value = rng.standard_normal(shape).astype(np.float32) * 0.1
    if key.endswith("running_var"):
      value = np.abs(value) + 1.0
    sd[key] = value
  return sd
