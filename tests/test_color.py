"""rgb_to_lab against scikit-image (float64) and finite differences."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from skimage import color as skcolor

from coarseseg_jax import color

CORNERS = np.array(list(itertools.product([0.0, 1.0], repeat=3)), np.float32)


def _reference(rgb):
  return skcolor.rgb2lab(np.asarray(rgb, np.float64))


def test_matches_skimage_on_random_colours_and_cube_corners():
  rng = np.random.default_rng(0)
  rgb = np.concatenate([
      rng.random((2000, 3)),
      rng.random((200, 3)) * 0.06,          # Dark: linear sRGB and Lab branches.
      np.full((1, 3), 0.04045), np.full((1, 3), 0.0405),  # At the threshold.
      CORNERS,
  ]).astype(np.float32)
  lab = np.asarray(jax.jit(color.rgb_to_lab)(rgb))
  assert lab.dtype == np.float32 and lab.shape == rgb.shape
  np.testing.assert_allclose(lab, _reference(rgb), atol=0.05, rtol=0)
  # The corners against hand-checked textbook values (black, white).
  np.testing.assert_allclose(lab[-8], [0.0, 0.0, 0.0], atol=1e-4)
  np.testing.assert_allclose(lab[-1], [100.0, 0.0, 0.0], atol=0.01)


def test_keeps_leading_axes_and_accepts_other_dtypes():
  rng = np.random.default_rng(1)
  rgb = rng.random((2, 5, 4, 3))
  lab = color.rgb_to_lab(jnp.asarray(rgb, jnp.bfloat16))
  assert lab.shape == (2, 5, 4, 3) and lab.dtype == jnp.float32
  # bfloat16 input is rounded first; compare with the rounded colours.
  rounded = np.asarray(jnp.asarray(rgb, jnp.bfloat16), np.float64)
  np.testing.assert_allclose(lab, _reference(rounded), atol=0.05)


def test_rejects_wrong_channel_count():
  with pytest.raises(ValueError, match="3"):
    color.rgb_to_lab(jnp.zeros((4, 4)))


def test_jacobian_matches_finite_differences_of_skimage():
  rng = np.random.default_rng(2)
  points = np.concatenate([rng.uniform(0.1, 0.9, (3, 3)),
                           rng.uniform(0.0, 0.03, (2, 3))])  # Dark branch too.
  jac = jax.jit(jax.jacfwd(color.rgb_to_lab))
  h = 1e-6
  for p in points:
    fd = np.stack([(_reference(p + h * e) - _reference(p - h * e)) / (2 * h)
                   for e in np.eye(3)], axis=1)
    np.testing.assert_allclose(jac(jnp.asarray(p, jnp.float32)), fd,
                               rtol=2e-3, atol=1e-2)


@pytest.mark.slow  # 5 s on 2 cores (compiles or runs more).
def test_gradient_is_finite_everywhere():
  rgb = jnp.asarray(np.concatenate([
      CORNERS, np.full((1, 3), 0.04045), np.full((1, 3), 1e-7),
      np.array([[-0.2, 1.3, 0.5]])]), jnp.float32)  # Out-of-range values too.
  grad = jax.jit(jax.grad(lambda x: jnp.sum(color.rgb_to_lab(x) ** 2)))(rgb)
  assert np.all(np.isfinite(grad))
  grad = jax.grad(lambda x: jnp.sum(color.rgb_to_lab(x)))(rgb)
  assert np.all(np.isfinite(grad))
