"""TF ops on label and SLIC maps, used inside the tf.data input pipeline.

* `propagate_labels`: SLIC label propagation, a baseline beyond the paper
  (`config.data.train_labels = 'slic_propagated'`): every unlabelled pixel
  takes the majority coarse label of its SLIC superpixel.
* `relabel_slic`: SLIC ids to 0..k-1 in raster order of first appearance
  (for crops), optionally capped.
"""

from typing import Optional

import tensorflow as tf

from coarseseg_jax.labels import IGNORE_LABEL, IGNORE_SLIC  # pylint: disable=g-multiple-import



def propagate_labels(label: tf.Tensor, slic: tf.Tensor) -> tf.Tensor:
  """SLIC label propagation: unlabelled pixels take their segment's majority.

  Args:
    label: (H, W) int32 class ids, 255 = unlabelled.
    slic: (H, W) int32 SLIC ids >= 0 (negative = no segment).

  Returns:
    (H, W) int32: `label` where it is labelled or has no segment; elsewhere
    the most frequent label among the labelled pixels of the pixel's SLIC
    segment (ties: the smaller id), or 255 if the segment has none.
  """
  flat, seg = tf.reshape(label, [-1]), tf.reshape(slic, [-1])
  known = (flat != IGNORE_LABEL) & (seg >= 0)
  depth = tf.maximum(tf.reduce_max(tf.where(known, flat, -1)) + 1, 1)
  num_segments = tf.maximum(tf.reduce_max(seg) + 1, 1)
  slots = (tf.boolean_mask(seg, known) * depth
           + tf.boolean_mask(flat, known))
  votes = tf.math.unsorted_segment_sum(tf.ones_like(slots), slots,
                                       num_segments * depth)
  votes = tf.reshape(votes, [num_segments, depth])
  majority = tf.where(tf.reduce_max(votes, axis=1) > 0,
                      tf.argmax(votes, axis=1, output_type=tf.int32),
                      IGNORE_LABEL)
  filled = tf.gather(majority, tf.maximum(seg, 0))
  out = tf.where((flat == IGNORE_LABEL) & (seg >= 0), filled, flat)
  return tf.reshape(out, tf.shape(label))


def relabel_slic(slic: tf.Tensor, cap: Optional[int]) -> tf.Tensor:
  """Ids -> 0..k-1 by first appearance (raster order); -1 kept; >= cap -> -1."""
  flat = tf.reshape(slic, [-1])
  uniques, index = tf.unique(flat)
  valid = uniques >= 0
  new = tf.where(valid, tf.cumsum(tf.cast(valid, tf.int32)) - 1, IGNORE_SLIC)
  if cap is not None:
    new = tf.where(new >= cap, IGNORE_SLIC, new)
  return tf.reshape(tf.gather(new, index), tf.shape(slic))
