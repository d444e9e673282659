"""The stem's max-pool against flax's, values and gradients, ties included."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from coarseseg_jax.models import pooling


def flax_pool(x):
  return nn.max_pool(x, (3, 3), (2, 2), padding=((1, 1), (1, 1)))


def _inputs():
  rng = np.random.default_rng(0)
  continuous = rng.normal(size=(2, 10, 12, 3)).astype(np.float32)
  # Few distinct values and ReLU zeros: most windows hold ties.
  ties = np.maximum(rng.integers(-2, 3, size=(2, 8, 6, 4)), 0)
  return [continuous, ties.astype(np.float32),
          -np.abs(continuous)]  # all negative: the -inf padding never wins.


@pytest.mark.slow  # 13 s on 2 cores (compiles or runs more).
@pytest.mark.parametrize("index", range(3))
def test_values_and_gradients_equal_flax(index):
  x = jnp.asarray(_inputs()[index])
  np.testing.assert_array_equal(pooling.max_pool_3x3_s2(x), flax_pool(x))
  # Differentiated, the forward pass is our own (with the argmax): same values.
  out, _ = jax.vjp(pooling.max_pool_3x3_s2, x)
  np.testing.assert_array_equal(out, flax_pool(x))
  g = jax.random.normal(jax.random.PRNGKey(index),
                        (x.shape[0], x.shape[1] // 2, x.shape[2] // 2,
                         x.shape[3]))
  ours = jax.grad(lambda v: jnp.sum(pooling.max_pool_3x3_s2(v) * g))(x)
  theirs = jax.grad(lambda v: jnp.sum(flax_pool(v) * g))(x)
  np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-6)
  # Every output's gradient lands on exactly one input.
  np.testing.assert_allclose(jnp.sum(ours), jnp.sum(g), rtol=1e-5)


def test_jit_bfloat16_and_nan():
  x = jnp.asarray(_inputs()[0])
  out = jax.jit(pooling.max_pool_3x3_s2)(x.astype(jnp.bfloat16))
  assert out.dtype == jnp.bfloat16
  np.testing.assert_array_equal(out, flax_pool(x.astype(jnp.bfloat16)))
  x = x.at[0, 5, 5, 0].set(jnp.nan)
  out = pooling.max_pool_3x3_s2(x)
  # Output (u, v) reads rows 2u - 1 .. 2u + 1: input (5, 5) lies in the
  # windows (2, 2), (2, 3), (3, 2), (3, 3). NaN propagates, as in flax's pool.
  nan = np.isnan(np.asarray(out[0, :, :, 0]))
  assert nan.sum() == 4 and nan[2:4, 2:4].all()
  np.testing.assert_array_equal(nan, np.isnan(np.asarray(flax_pool(x)[0, :, :, 0])))
  differentiated, _ = jax.vjp(pooling.max_pool_3x3_s2, x)
  np.testing.assert_array_equal(np.isnan(np.asarray(differentiated)),
                                np.isnan(np.asarray(out)))


def test_odd_size_is_refused():
  with pytest.raises(ValueError, match="even height and width"):
    pooling.max_pool_3x3_s2(jnp.zeros((1, 5, 6, 2)))
