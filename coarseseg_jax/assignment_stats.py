"""Diagnostics of soft superpixel assignments (pure, jit-able).

Three numbers per assignment level tell whether the learned superpixels are
healthy, e.g. at initialisation or during training:

* **entropy** (nats) of each pixel's weights over its candidates: log 9 = 2.197
  for uniform weights over 9 in-grid candidates (log 6 on an edge of the grid,
  log 4 in a corner), 0 for a hard assignment. A saturated softmax (the
  paper's dot similarity at tau = 0.07 on an untrained model) sits near 0.
* **parent share**: the share of pixels whose largest weight is on their
  parent cell (k = 4). The regular grid gives 1, random hard assignments
  about 1/9. Exact ties (e.g. uniform weights) count fractionally: a pixel
  whose maximum is shared by n candidates, the parent among them, counts 1/n
  (the chance that a random tie-break picks the parent). `jnp.argmax`, which
  `superpixels.hard_superpixels` uses, breaks ties by the lowest k instead.
* **starved cells**: the share of coarse cells receiving less than one pixel
  of assignment mass (`superpixels.cell_mass`; 4 on average, exactly 4 for
  the regular grid). Such cells decode values almost nobody pools into them.

Conventions as in `coarseseg_jax.superpixels`: an assignment at stride s is
``(B, H_s, W_s, 9)`` float, candidates outside the coarse grid have weight
exactly 0 and are ignored (they contribute 0 to the entropy and never tie for
the maximum). Lists of assignments are ordered finest first, ``[A_4, A_8]``.
"""

from typing import Dict, Optional, Sequence

import jax
import jax.numpy as jnp

from coarseseg_jax import superpixels

PARENT = 4  # Neighbour k = 4 is the parent cell.


def entropy(assignment: jax.Array) -> jax.Array:
  """Per-pixel entropy in nats: ``(B, H, W, 9) -> (B, H, W)`` float32.

  ``-sum_k a_k log a_k`` with ``0 log 0 = 0`` (masked candidates, and weights
  that underflowed to 0, add nothing).
  """
  a = assignment.astype(jnp.float32)
  return -jnp.sum(jax.scipy.special.xlogy(a, a), axis=-1)


def parent_on_top(assignment: jax.Array) -> jax.Array:
  """Per-pixel share of the maximum held by the parent: ``(B, H, W)``.

  1 where the parent's weight is the unique maximum, ``1/n`` where n
  candidates (the parent among them) tie for it, 0 otherwise.
  """
  a = assignment.astype(jnp.float32)
  ties = a == jnp.max(a, axis=-1, keepdims=True)
  return ties[..., PARENT] / jnp.sum(ties, axis=-1)


def mean_entropy(assignment: jax.Array) -> jax.Array:
  """Mean per-pixel entropy (nats) of every image: ``(B, H, W, 9) -> (B,)``."""
  return jnp.mean(entropy(assignment), axis=(1, 2))


def parent_share(assignment: jax.Array) -> jax.Array:
  """Share of pixels whose largest weight is on their parent (ties count
  fractionally, see `parent_on_top`): ``(B, H, W, 9) -> (B,)``."""
  return jnp.mean(parent_on_top(assignment), axis=(1, 2))


def starved_cells(assignment: jax.Array, min_mass: float = 1.0) -> jax.Array:
  """Share of the coarse grid's cells receiving less than ``min_mass``.

  Args:
    assignment: ``(B, 2h, 2w, 9)`` assignment at stride s.
    min_mass: threshold in pixels of the stride-s grid (1: less than one
      pixel's worth of weight).

  Returns:
    ``(B,)`` float32: the share of the ``h * w`` cells of the stride-2s grid
    whose `superpixels.cell_mass` is below ``min_mass``.
  """
  mass = superpixels.cell_mass(assignment.astype(jnp.float32))
  return jnp.mean((mass < min_mass).astype(jnp.float32), axis=(1, 2))


def per_image(assignments: Sequence[jax.Array],
              strides: Optional[Sequence[int]] = None) -> Dict[str, jax.Array]:
  """All diagnostics of all levels, per image.

  Args:
    assignments: finest first, e.g. ``[A_4, A_8]`` of HCFCN-16.
    strides: the stride of each level, for the key names; default 4, 8,
      16, ... (HCFCN-16's).

  Returns:
    ``{"a4_entropy", "a4_parent_share", "a4_starved_cells", "a8_entropy",
    ...}``: float32 ``(B,)`` arrays; empty for no assignments (models
    without superpixels).
  """
  if strides is None:
    strides = [4 * 2 ** i for i in range(len(assignments))]
  if len(strides) != len(assignments):
    raise ValueError(f"{len(assignments)} assignments but {len(strides)} "
                     "strides.")
  out = {}
  for s, a in zip(strides, assignments):
    out[f"a{s}_entropy"] = mean_entropy(a)
    out[f"a{s}_parent_share"] = parent_share(a)
    out[f"a{s}_starved_cells"] = starved_cells(a)
  return out


def summary(assignments: Sequence[jax.Array],
            strides: Optional[Sequence[int]] = None) -> Dict[str, jax.Array]:
  """`per_image`'s diagnostics averaged over the batch (scalars), for logging.
  """
  return {k: jnp.mean(v) for k, v in per_image(assignments, strides).items()}
