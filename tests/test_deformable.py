"""Tests of the DCNv2 op and layer against plain convs and a NumPy reference."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from coarseseg_jax.models import deformable


def plain_conv(x, kernel, stride=1, padding=1, dilation=1):
  return jax.lax.conv_general_dilated(
      x, kernel, (stride, stride), ((padding, padding), (padding, padding)),
      rhs_dilation=(dilation, dilation),
      dimension_numbers=("NHWC", "HWIO", "NHWC"))


def _bilinear_ref(img, y, x):
  """torchvision's deform_conv2d bilinear sampling of one (H, W, C) image."""
  h, w, _ = img.shape
  if y <= -1 or y >= h or x <= -1 or x >= w:
    return np.zeros(img.shape[-1])
  y0, x0 = math.floor(y), math.floor(x)
  ly, lx = y - y0, x - x0
  out = np.zeros(img.shape[-1])
  for yy, xx, wt in ((y0, x0, (1 - ly) * (1 - lx)), (y0, x0 + 1, (1 - ly) * lx),
                     (y0 + 1, x0, ly * (1 - lx)), (y0 + 1, x0 + 1, ly * lx)):
    if 0 <= yy < h and 0 <= xx < w:
      out += wt * img[yy, xx]
  return out


def deform_conv_ref(x, kernel, offsets, mask, stride, padding, dilation):
  """Slow per-output, per-tap NumPy reference (float64), fractional offsets."""
  x, kernel = np.asarray(x, np.float64), np.asarray(kernel, np.float64)
  b, h, w, _ = x.shape
  kh, kw, _, o = kernel.shape
  ho = (h + 2 * padding - dilation * (kh - 1) - 1) // stride + 1
  wo = (w + 2 * padding - dilation * (kw - 1) - 1) // stride + 1
  out = np.zeros((b, ho, wo, o))
  for n in range(b):
    for i in range(ho):
      for j in range(wo):
        for k in range(kh * kw):
          ki, kj = divmod(k, kw)
          dy, dx = offsets[n, i, j, k]
          y = i * stride - padding + ki * dilation + dy
          xx = j * stride - padding + kj * dilation + dx
          v = _bilinear_ref(x[n], y, xx) * mask[n, i, j, k]
          out[n, i, j] += v @ kernel[ki, kj]
  return out


def _inputs(seed, b=2, h=7, w=6, c=3, o=4, k=3):
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(b, h, w, c)).astype(np.float32)
  kernel = rng.normal(size=(k, k, c, o)).astype(np.float32)
  return x, kernel


@pytest.mark.slow  # 15 s on 2 cores (compiles or runs more).
@pytest.mark.parametrize("stride,padding,dilation", [(1, 1, 1), (2, 1, 1),
                                                     (1, 2, 2), (2, 0, 1)])
def test_zero_offsets_unit_mask_is_plain_conv(stride, padding, dilation):
  x, kernel = _inputs(0, h=8, w=10)
  ho = deformable.output_size(8, 3, stride, padding, dilation)
  wo = deformable.output_size(10, 3, stride, padding, dilation)
  offsets = jnp.zeros((2, ho, wo, 9, 2))
  got = deformable.deform_conv2d(x, kernel, offsets, jnp.ones((2, ho, wo, 9)),
                                 stride, padding, dilation)
  want = plain_conv(x, kernel, stride, padding, dilation)
  assert got.shape == want.shape == (2, ho, wo, 4)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
  # mask=None means 1.
  got_none = deformable.deform_conv2d(x, kernel, offsets, None, stride, padding,
                                      dilation)
  np.testing.assert_allclose(got_none, want, rtol=1e-5, atol=1e-5)


@pytest.mark.slow  # 6 s on 2 cores (compiles or runs more).
@pytest.mark.parametrize("dy,dx,stride", [(1, -2, 1), (-3, 1, 2), (2, 2, 1)])
def test_integer_offset_is_shifted_plain_conv(dy, dx, stride):
  x, kernel = _inputs(1, h=8, w=8)
  # The zero-padded input, shifted: xs(y, x) = x(y + dy, x + dx) for
  # y, x in [-1, 8], zero outside the image; then a padding-0 plain conv.
  big = np.pad(x, ((0, 0), (8, 8), (8, 8), (0, 0)))
  shifted = big[:, 7 + dy:17 + dy, 7 + dx:17 + dx]
  ho = wo = deformable.output_size(8, 3, stride, 1, 1)
  offsets = np.broadcast_to(np.array([dy, dx], np.float32), (2, ho, wo, 9, 2))
  got = deformable.deform_conv2d(x, kernel, offsets, stride=stride)
  want = plain_conv(shifted, kernel, stride, padding=0)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
  assert np.abs(want - plain_conv(x, kernel, stride)).max() > 1e-2


@pytest.mark.slow  # 12 s on 2 cores (compiles or runs more).
@pytest.mark.parametrize("stride,padding,dilation,k",
                         [(1, 1, 1, 3), (2, 1, 1, 3), (1, 2, 2, 3),
                          (2, 0, 1, 2)])
def test_matches_numpy_reference(stride, padding, dilation, k):
  x, kernel = _inputs(2, h=5, w=6, k=k)
  ho = deformable.output_size(5, k, stride, padding, dilation)
  wo = deformable.output_size(6, k, stride, padding, dilation)
  rng = np.random.default_rng(3)
  # Offsets up to +-3.5 px: many samples cross the border or leave the image.
  offsets = rng.uniform(-3.5, 3.5, (2, ho, wo, k * k, 2)).astype(np.float32)
  offsets[0, 0, 0, 0] = (-7.0, 0.3)     # Completely outside: reads 0.
  offsets[0, 0, 0, 1] = (padding - 1.0, 0.3)  # Tap 1 lands on y = -1 exactly.
  mask = rng.uniform(0, 1, (2, ho, wo, k * k)).astype(np.float32)
  got = deformable.deform_conv2d(x, kernel, offsets, mask, stride, padding,
                                 dilation)
  want = deform_conv_ref(x, kernel, offsets, mask, stride, padding, dilation)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.slow  # 4 s on 2 cores (compiles or runs more).
def test_sample_outside_reads_zero_and_border_is_partial():
  x = np.ones((1, 4, 4, 1), np.float32)
  offsets = np.zeros((1, 4, 4, 1, 2), np.float32)
  offsets[0, 0, 0, 0] = (-0.25, 0.0)  # Straddles the top border: 0.75 inside.
  offsets[0, 0, 1, 0] = (-2.0, 0.0)   # One pixel beyond y = -1: 0.
  offsets[0, 3, 3, 0] = (0.5, 0.5)    # Bottom-right corner: 0.25 inside.
  taps = deformable.deform_sample(x, offsets, None, 1, 1, 0, 1)
  assert taps.shape == (1, 4, 4, 1, 1)
  np.testing.assert_allclose(taps[0, 0, 0, 0, 0], 0.75, atol=1e-6)
  np.testing.assert_allclose(taps[0, 0, 1, 0, 0], 0.0, atol=1e-6)
  np.testing.assert_allclose(taps[0, 3, 3, 0, 0], 0.25, atol=1e-6)
  np.testing.assert_allclose(taps[0, 2, 2, 0, 0], 1.0, atol=1e-6)


@pytest.mark.slow  # 7 s on 2 cores (compiles or runs more).
def test_gradients_match_finite_differences():
  x, kernel = _inputs(4, b=1, h=5, w=5, c=2, o=2)
  rng = np.random.default_rng(5)
  # Offsets away from integers so the bilinear map is smooth around them.
  offsets = (rng.integers(-2, 3, (1, 3, 3, 9, 2)) +
             rng.uniform(0.2, 0.8, (1, 3, 3, 9, 2))).astype(np.float32)
  mask = rng.uniform(0.2, 1, (1, 3, 3, 9)).astype(np.float32)
  f = lambda *a: jnp.sum(jnp.sin(deformable.deform_conv2d(*a, stride=2)))
  grads = jax.grad(f, argnums=(0, 1, 2, 3))(x, kernel, offsets, mask)
  for arg, g in enumerate(grads):
    args = [np.array(a, np.float64) for a in (x, kernel, offsets, mask)]
    flat = args[arg].reshape(-1)
    for idx in rng.choice(flat.size, 4, replace=False):
      eps = 1e-3
      vals = []
      for sign in (1, -1):
        a2 = [a.copy() for a in args]
        a2[arg].reshape(-1)[idx] += sign * eps
        vals.append(np.sum(np.sin(deform_conv_ref(*a2, 2, 1, 1))))
      num = (vals[0] - vals[1]) / (2 * eps)
      np.testing.assert_allclose(np.asarray(g).reshape(-1)[idx], num,
                                 rtol=2e-2, atol=2e-3)


def test_jit_and_shape_errors():
  x, kernel = _inputs(6)
  f = jax.jit(deformable.deform_conv2d, static_argnames=("stride",))
  out = f(x, kernel, jnp.zeros((2, 7, 6, 9, 2)))
  assert out.shape == (2, 7, 6, 4)
  with pytest.raises(ValueError, match="offsets must have shape"):
    deformable.deform_conv2d(x, kernel, jnp.zeros((2, 7, 6, 9)))
  with pytest.raises(ValueError, match="mask must have shape"):
    deformable.deform_conv2d(x, kernel, jnp.zeros((2, 7, 6, 9, 2)),
                             jnp.ones((2, 7, 6, 8)))
  with pytest.raises(ValueError, match="input channels"):
    deformable.deform_conv2d(x[..., :2], kernel, jnp.zeros((2, 7, 6, 9, 2)))


@pytest.mark.slow  # 7 s on 2 cores (compiles or runs more).
def test_module_starts_as_half_plain_conv_and_learns_offsets():
  x, _ = _inputs(7, h=8, w=8)
  layer = deformable.DeformConv(5, strides=(2, 2))
  variables = layer.init(jax.random.key(0), x)
  params = variables["params"]
  assert params["kernel"].shape == (3, 3, 3, 5)
  assert params["offset_conv"]["kernel"].shape == (3, 3, 3, 27)
  assert not np.any(params["offset_conv"]["kernel"])
  y = layer.apply(variables, x)
  np.testing.assert_allclose(y, 0.5 * plain_conv(x, params["kernel"], 2),
                             rtol=1e-5, atol=1e-5)
  grads = jax.grad(
      lambda p: jnp.sum(layer.apply({"params": p}, x) ** 2))(params)
  for leaf in jax.tree.leaves(grads["offset_conv"]):
    assert np.abs(leaf).max() > 0
  # Moving the offsets changes the output.
  moved = jax.tree.map(lambda g, p: p - 0.1 * g, grads, params)
  assert np.abs(layer.apply({"params": moved}, x) - y).max() > 1e-3


def test_module_bfloat16():
  x, _ = _inputs(8, h=8, w=8)
  layer32 = deformable.DeformConv(4, strides=(2, 2), use_bias=True)
  layer16 = deformable.DeformConv(4, strides=(2, 2), use_bias=True,
                                  dtype=jnp.bfloat16)
  variables = layer32.init(jax.random.key(0), x)
  variables = jax.tree.map(lambda v: v + 0.05, variables)  # Non-zero offsets.
  y32, y16 = layer32.apply(variables, x), layer16.apply(variables, x)
  assert y16.dtype == jnp.bfloat16 and y32.dtype == jnp.float32
  assert all(v.dtype == jnp.float32 for v in jax.tree.leaves(variables))
  err = np.abs(np.asarray(y16, np.float32) - y32).max()
  assert err < 0.05 * np.abs(y32).max()
