"""tf.data input pipeline: TFDS records -> process-local NumPy batches -> jax.

Batches (process-local NumPy dicts; `b` = global batch // process count):
  image       float32 (b, H, W, 3) in [0, 1] (normalisation is the model's).
  label       int32   (b, H, W) the training labels (`data.train_labels`:
              coarse, fine, slic_propagated or refined); 255 = unlabelled or
              padding.
  label_fine  int32   (b, H, W) fine labels, 255 = unlabelled or padding.
  slic        int32   (b, H, W) SLIC ids, -1 = ignored or padding.
  mask        float32 (b,) 1 for real examples, 0 for padding examples.
  Evaluation only: `height`, `width` int32 (b,) the evaluated image's size
  (after the optional centre crop), `id` (b,) bytes.

Training (`create_train_iterator`): one random draw per example, applied
jointly to the image, both labels and the SLIC map: scale in
`data.scale_range` (bilinear + antialias for the image, nearest neighbour for
the rest), padding bottom/right up to the crop (image 0, labels 255, slic
-1), a `crop_size` crop, a horizontal flip. `data.train_labels`:
`slic_propagated` (beyond the paper) first gives each unlabelled coarse pixel
the majority coarse label of its SLIC superpixel (ties: the smaller class;
`propagate_labels`); `refined` reads the PNG `--mode=refine` wrote for the
example's id (`datasets/refined.py`). SLIC ids of a crop are relabelled
0..k-1 in raster order, ids >= `data.slic_num_segments` set to -1.

Evaluation (`create_eval_iterator`): no augmentation (`label` is the coarse
label for slic_propagated and refined); whole images or the centre
`data.eval_center_crop` (the paper's protocol), padded bottom/right to ONE
size per split (its largest height and width, rounded up to 16): one
compilation, equal shapes on every host. SLIC ids are never capped (the SLIC
ASA needs them all). The last batch is filled with dummy examples (`mask` 0)
and every process yields `num_eval_batches` batches, so collectives line up
and each image counts once.

Multi-host: process p of P reads `tfds.even_splits(split, P)[p]`; the global
batch is the concatenation of the process batches (`sharding.shard_batch`).

Resumption: with `data.deterministic` (the default), epoch e's order and
augmentation are pure functions of (seed, e, process, position); an epoch
has exactly `steps_per_epoch` batches (drop remainder), so
`create_train_iterator(..., start_step=s)` yields what an uninterrupted run
yields from step s on (the skipped examples are read, not decoded), for the
same dataset, seed, global batch size and process count.
"""

import functools
from typing import Dict, Iterator, Optional, Tuple

import jax
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from coarseseg_jax.datasets import refined
from coarseseg_jax.datasets.label_ops import propagate_labels, relabel_slic  # pylint: disable=g-multiple-import
from coarseseg_jax.labels import IGNORE_LABEL, IGNORE_SLIC  # pylint: disable=g-multiple-import

_ALIGN = 16
_HEAVY = ("image", "label_fine", "label_coarse", "slic")
# data.train_labels -> the stored label feature it reads.
_LABEL_KEYS = {"coarse": "label_coarse", "fine": "label_fine",
               "slic_propagated": "label_coarse", "refined": "label_coarse"}
_size_cache: Dict[Tuple[str, str], Tuple[int, int]] = {}
# What eval examples are padded with (and dummy examples filled with).
_PAD_VALUES = {"image": 0.0, "label": IGNORE_LABEL,
               "label_fine": IGNORE_LABEL, "slic": IGNORE_SLIC}
# Every function given to tf.data runs as written, not through autograph:
# they branch only on Python values (the config) or with explicit tf.cond /
# tf.where, and autograph's source conversion costs seconds at each start.
_plain = tf.autograph.experimental.do_not_convert


def _hide_tf_accelerators():
  """Keeps TensorFlow (full, non -cpu builds) off the GPUs/TPUs JAX uses."""
  try:
    tf.config.set_visible_devices([], "GPU")
    tf.config.set_visible_devices([], "TPU")
  except (RuntimeError, ValueError):  # Already initialised, or no such type.
    pass


def _processes(process_index, process_count) -> Tuple[int, int]:
  index = jax.process_index() if process_index is None else process_index
  count = jax.process_count() if process_count is None else process_count
  if not 0 <= index < count:
    raise ValueError(f"process_index {index} not in [0, {count}).")
  return index, count


def _local_batch(batch_size: int, process_count: int) -> int:
  if batch_size <= 0 or batch_size % process_count:
    raise ValueError(
        f"the global batch size {batch_size} must be a positive multiple of "
        f"the number of processes ({process_count}).")
  return batch_size // process_count


def _read(builder, split) -> tf.data.Dataset:
  """Records of `split` in file order; heavy features left encoded."""
  return builder.as_dataset(
      split=split, shuffle_files=False,
      decoders={k: tfds.decode.SkipDecoding() for k in _HEAVY},
      read_config=tfds.ReadConfig(try_autocache=False, add_tfds_id=False))


def _decode(builder, record, label_key: str,
            fine_key: str = "label_fine") -> Dict[str, tf.Tensor]:
  """image uint8 (H, W, 3); `labels` int32 (3, H, W): label, fine, slic.

  `fine_key`: the stored labels of the `label_fine` channel (label_coarse for
  coarse validation, `create_eval_iterator`'s `targets`).

  The labels are stacked on a leading axis so that one op (a slice, a flip, a
  nearest-neighbour resize of a "batch" of 3) transforms all three jointly.
  """
  features = builder.info.features
  fine = tf.cast(features[fine_key].decode_example(record[fine_key]),
                 tf.int32)[..., 0]
  label = fine if label_key == fine_key else tf.cast(
      features[label_key].decode_example(record[label_key]), tf.int32)[..., 0]
  slic = tf.cast(features["slic"].decode_example(record["slic"]), tf.int32)
  image = features["image"].decode_example(record["image"])
  return {"image": image, "id": record["id"],
          "labels": tf.stack([label, fine, slic])}


def example_shapes(builder, split: str) -> Iterator[Tuple[str, int, int]]:
  """(example id, height, width) of every example of `split`, in file
  order, from the stored SLIC shapes (nothing is decoded)."""
  shapes = _read(builder, split).map(
      _plain(lambda r: (r["id"], r["slic"]["shape"])))
  for ident, shape in shapes.as_numpy_iterator():
    yield ident.decode("utf-8", "replace"), int(shape[0]), int(shape[1])


def _label_key(data_config) -> str:
  if data_config.train_labels not in _LABEL_KEYS:
    raise ValueError(f"data.train_labels={data_config.train_labels!r} must be "
                     f"one of {', '.join(_LABEL_KEYS)}.")
  return _LABEL_KEYS[data_config.train_labels]


def _finish(image, labels, relabel: bool, slic_cap: Optional[int]):
  """Float image, split labels; -1 (padding) becomes 255 in label channels."""
  both = labels[:2]
  both = tf.where(both < 0, IGNORE_LABEL, both)
  image = tf.clip_by_value(tf.cast(image, tf.float32) / 255.0, 0.0, 1.0)
  slic = labels[2]
  return {"image": image, "label": both[0], "label_fine": both[1],
          "slic": relabel_slic(slic, slic_cap) if relabel else slic}


def _augment(image, labels, key, data_config) -> Dict[str, tf.Tensor]:
  """Joint random scale, pad, crop and flip; see the module docstring."""
  crop = data_config.crop_size
  k_scale, k_y, k_x, k_flip = tf.unstack(
      tf.random.experimental.stateless_split(key, 4))
  lo, hi = (float(s) for s in data_config.scale_range)
  if (lo, hi) != (1.0, 1.0):
    scale = tf.random.stateless_uniform([], k_scale, lo, hi)
    size = tf.maximum(tf.cast(tf.round(
        tf.cast(tf.shape(image)[:2], tf.float32) * scale), tf.int32), 1)
    image = tf.image.resize(image, size, "bilinear", antialias=True)
    labels = tf.image.resize(labels[..., None], size, "nearest")[..., 0]
  shape = tf.shape(image)
  pad_h, pad_w = tf.maximum(crop - shape[0], 0), tf.maximum(crop - shape[1], 0)
  image = tf.pad(image, [[0, pad_h], [0, pad_w], [0, 0]])
  labels = tf.pad(labels, [[0, 0], [0, pad_h], [0, pad_w]],
                  constant_values=-1)
  y = tf.random.stateless_uniform([], k_y, 0, shape[0] + pad_h - crop + 1,
                                  tf.int32)
  x = tf.random.stateless_uniform([], k_x, 0, shape[1] + pad_w - crop + 1,
                                  tf.int32)
  image = image[y:y + crop, x:x + crop]
  labels = labels[:, y:y + crop, x:x + crop]
  if data_config.hflip:
    flip = tf.random.stateless_uniform([], k_flip) < 0.5
    image = tf.cond(flip, lambda: image[:, ::-1], lambda: image)
    labels = tf.cond(flip, lambda: labels[:, :, ::-1], lambda: labels)
  out = _finish(tf.ensure_shape(image, [crop, crop, 3]),
                tf.ensure_shape(labels, [3, crop, crop]), True,
                data_config.slic_num_segments)
  out["mask"] = tf.constant(1.0, tf.float32)
  return out


def _options(deterministic: bool) -> tf.data.Options:
  options = tf.data.Options()
  options.deterministic = deterministic
  options.autotune.enabled = True
  options.threading.max_intra_op_parallelism = 1
  options.experimental_optimization.map_parallelization = True
  return options


def _check_config(data_config):
  if data_config.crop_size <= 0 or data_config.crop_size % _ALIGN:
    raise ValueError(f"data.crop_size={data_config.crop_size} must be a "
                     f"positive multiple of {_ALIGN}.")
  lo, hi = data_config.scale_range
  if not 0 < lo <= hi:
    raise ValueError(f"data.scale_range={data_config.scale_range} must be "
                     "(lo, hi) with 0 < lo <= hi.")
  _label_key(data_config)


def steps_per_epoch(builder: tfds.core.DatasetBuilder, global_batch_size: int,
                    split: str = "train") -> int:
  """Number of full global batches in one epoch of `split` (drop remainder)."""
  n = builder.info.splits[split].num_examples
  if global_batch_size <= 0 or n < global_batch_size:
    raise ValueError(f"split {split!r} has {n} examples, fewer than one global "
                     f"batch of {global_batch_size}.")
  return n // global_batch_size


def create_train_iterator(
    builder: tfds.core.DatasetBuilder, data_config, global_batch_size: int, *,
    seed: int, start_step: int = 0, split: str = "train",
    process_index: Optional[int] = None, process_count: Optional[int] = None,
) -> Iterator[Dict[str, np.ndarray]]:
  """Infinite iterator of this process's augmented training batches.

  Args:
    builder: a prepared TFDS builder with `segmentation_features()`.
    data_config: `config.data` (crop_size, scale_range, hflip, train_labels,
      slic_num_segments, shuffle_buffer, deterministic).
    global_batch_size: batch over all processes; must divide by their count.
    seed: the run's seed; order and augmentation are functions of it.
    start_step: global step to resume from (see the module docstring).
    split: TFDS split expression, e.g. "train" or "train+validation".
    process_index, process_count: default to JAX's; explicit for tests.

  Yields:
    dicts of NumPy arrays with `b = global_batch_size // process_count`:
    `image` float32 (b, crop, crop, 3), `label`, `label_fine`, `slic` int32
    (b, crop, crop), `mask` float32 (b,) of ones.
  """
  _check_config(data_config)
  _hide_tf_accelerators()
  index, count = _processes(process_index, process_count)
  local = _local_batch(global_batch_size, count)
  spe = steps_per_epoch(builder, global_batch_size, split)
  per_epoch = spe * local  # <= every shard's size, so all shards agree.
  if start_step < 0:
    raise ValueError(f"start_step={start_step} must be >= 0.")
  start_epoch, skip = divmod(int(start_step), spe)
  label_key = _label_key(data_config)
  propagate = data_config.train_labels == "slic_propagated"
  read_refined = (refined.label_reader(data_config.refined_dir,
                                       data_config.train_split,
                                       data_config.refined_fill)
                  if data_config.train_labels == "refined" else None)
  records = _read(builder, tfds.even_splits(split, count)[index])
  key = tf.random.experimental.stateless_fold_in(
      tf.constant([seed % 2**31, seed // 2**31 % 2**31], tf.int64), index)
  buffer = max(1, int(data_config.shuffle_buffer))

  def epoch_records(epoch):
    order_seed = tf.random.stateless_uniform(
        [], tf.random.experimental.stateless_fold_in(key, epoch), 1, 2**62,
        tf.int64)
    ds = records.shuffle(buffer, seed=order_seed,
                         reshuffle_each_iteration=False).take(per_epoch)
    ds = ds.enumerate().skip(
        tf.where(epoch == start_epoch, tf.constant(skip * local, tf.int64), 0))
    return ds.map(_plain(lambda pos, rec: (epoch, pos, rec)))

  def example(epoch, pos, record):
    decoded = _decode(builder, record, label_key)
    labels = decoded["labels"]
    if propagate:  # Before augmentation: whole-image SLIC segments.
      labels = tf.concat([propagate_labels(labels[0], labels[2])[None],
                          labels[1:]], axis=0)
    if read_refined is not None:  # Of the stored size (`refined.check_split`).
      labels = tf.concat([read_refined(decoded["id"], labels[0])[None],
                          labels[1:]], axis=0)
    ex_key = tf.random.experimental.stateless_fold_in(
        tf.random.experimental.stateless_fold_in(key, epoch), pos + 1)
    return _augment(decoded["image"], labels, ex_key, data_config)

  ds = tf.data.Dataset.range(start_epoch, 2**62).flat_map(
      _plain(epoch_records))
  ds = ds.map(_plain(example), num_parallel_calls=tf.data.AUTOTUNE)
  ds = ds.batch(local, drop_remainder=True).prefetch(tf.data.AUTOTUNE)
  return ds.with_options(_options(bool(data_config.deterministic))
                         ).as_numpy_iterator()


def _shard_sizes(builder, split, process_count):
  return [builder.info.splits[s].num_examples
          for s in tfds.even_splits(split, process_count)]


def num_eval_batches(builder: tfds.core.DatasetBuilder, split: str,
                     batch_size: int, *,
                     process_count: Optional[int] = None) -> int:
  """Batches every process yields from `create_eval_iterator` (same args)."""
  _, count = _processes(0, process_count)
  local = _local_batch(batch_size, count)
  return -(-max(_shard_sizes(builder, split, count)) // local)


def eval_pad_size(builder: tfds.core.DatasetBuilder, data_config,
                  split: str) -> Tuple[int, int]:
  """The (height, width) every eval batch of `split` is padded to.

  The largest height and width over the whole split (read from the stored
  SLIC shapes, nothing is decoded; cached), clipped to `eval_center_crop` when
  set, rounded up to a multiple of 16.
  """
  cache_key = (str(builder.data_dir), str(split))
  if cache_key not in _size_cache:
    shapes = _read(builder, split).map(_plain(lambda r: r["slic"]["shape"]))
    _size_cache[cache_key] = tuple(int(v) for v in shapes.reduce(
        tf.zeros([2], tf.int32), tf.maximum))
  h, w = _size_cache[cache_key]
  crop = data_config.eval_center_crop
  if crop:
    h, w = min(h, int(crop)), min(w, int(crop))
  return -(-h // _ALIGN) * _ALIGN, -(-w // _ALIGN) * _ALIGN


def _eval_example(builder, label_key: str, crop: Optional[int],
                  pad: Tuple[int, int], record,
                  fine_key: str = "label_fine") -> Dict[str, tf.Tensor]:
  """One eval example: decoded, centre-cropped (`crop`), padded to `pad`."""
  pad_h, pad_w = pad
  decoded = _decode(builder, record, label_key, fine_key)
  image, labels = decoded["image"], decoded["labels"]
  shape = tf.shape(image)
  if crop:
    h, w = tf.minimum(shape[0], crop), tf.minimum(shape[1], crop)
    y, x = (shape[0] - h) // 2, (shape[1] - w) // 2
    image, labels = image[y:y + h, x:x + w], labels[:, y:y + h, x:x + w]
    shape = tf.shape(image)
  out = _finish(image, labels, bool(crop), None)
  for k, v in _PAD_VALUES.items():
    paddings = [[0, pad_h - shape[0]], [0, pad_w - shape[1]]]
    paddings += [[0, 0]] * (k == "image")
    out[k] = tf.ensure_shape(tf.pad(out[k], paddings, constant_values=v),
                             [pad_h, pad_w] + [3] * (k == "image"))
  out.update(mask=tf.constant(1.0), height=shape[0], width=shape[1],
             id=decoded["id"])
  return out


def create_eval_iterator(
    builder: tfds.core.DatasetBuilder, data_config, split: str,
    batch_size: int, *, process_index: Optional[int] = None,
    process_count: Optional[int] = None,
    pad_to: Optional[Tuple[int, int]] = None, targets: str = "fine",
) -> Iterator[Dict[str, np.ndarray]]:
  """Finite iterator over this process's share of `split`, one pass.

  Args:
    builder: a prepared TFDS builder with `segmentation_features()`.
    data_config: `config.data` (train_labels, eval_center_crop); `label` is
      the coarse label for train_labels = slic_propagated or refined.
    split: TFDS split expression.
    batch_size: GLOBAL eval batch; must divide by the number of processes.
    process_index, process_count: default to JAX's; explicit for tests.
    pad_to: (height, width) to pad to (each a multiple of 16, at least every
      evaluated image); default `eval_pad_size(builder, data_config, split)`.
    targets: the labels every metric is computed against, in `label_fine`:
      "fine", or "coarse" (`data.validation_labels`: selection without fine
      labels; then `label` holds the coarse labels too).

  Yields:
    `num_eval_batches(...)` dicts with `b = batch_size // process_count`:
    `image` float32 (b, H, W, 3), `label`, `label_fine`, `slic` int32
    (b, H, W), `mask` float32 (b,), `height`, `width` int32 (b,), `id` (b,)
    bytes (b"" for padding examples).
  """
  _hide_tf_accelerators()
  index, count = _processes(process_index, process_count)
  local = _local_batch(batch_size, count)
  if targets not in ("fine", "coarse"):
    raise ValueError(f"targets={targets!r} must be 'fine' or 'coarse'.")
  fine_key = f"label_{targets}"
  label_key = (fine_key if targets == "coarse" else _label_key(data_config))
  pad_h, pad_w = pad_to or eval_pad_size(builder, data_config, split)
  if pad_h % _ALIGN or pad_w % _ALIGN:
    raise ValueError(f"pad_to={pad_to} must be multiples of {_ALIGN}.")
  crop = data_config.eval_center_crop
  sizes = _shard_sizes(builder, split, count)
  total = -(-max(sizes) // local) * local

  example = functools.partial(_eval_example, builder, label_key, crop,
                              (pad_h, pad_w), fine_key=fine_key)
  dummy = {k: tf.fill([pad_h, pad_w] + [3] * (k == "image"), v)
           for k, v in _PAD_VALUES.items()}
  dummy.update(mask=tf.constant(0.0), height=tf.constant(0),
               width=tf.constant(0), id=tf.constant(b""))
  padding = tf.data.Dataset.from_tensors(dummy).repeat(total - sizes[index])
  ds = padding
  if sizes[index]:
    ds = _read(builder, tfds.even_splits(split, count)[index]).map(
        _plain(example), num_parallel_calls=tf.data.AUTOTUNE
    ).concatenate(padding)
  ds = ds.batch(local, drop_remainder=True).prefetch(tf.data.AUTOTUNE)
  return ds.with_options(_options(True)).as_numpy_iterator()
