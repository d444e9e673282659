"""Modulated deformable convolution (DCNv2) in pure JAX, NHWC.

Semantics follow ``torchvision.ops.deform_conv2d``: the output at ``(i, j)`` is

    y[i, j] = sum_k  mask[i, j, k] * W_k . x(p_k),
    p_k = (i * stride - pad + ki * dil + dy_k,
           j * stride - pad + kj * dil + dx_k)

over the taps ``k = ki * kw + kj`` of the kernel window, where ``x(p)`` is the
bilinear interpolation of the input at the fractional position ``p`` and the
four corners that fall outside the image read zeros (a sample more than one
pixel outside reads exactly 0).

Implementation (`deform_sample`): the sampling positions and the bilinear
weights of the four corners of every sample are computed in float32 (corners
outside the image get weight 0, their row index is clipped); four gathers, one
per corner, each fetch the C-vectors of all ``kh * kw`` taps of all outputs at
once, and their weighted sum (x mask) is the ``(B, Ho, Wo, K, C)`` tensor of
sampled taps (XLA fuses the gathers and the sum into one loop), which
`deform_conv2d` contracts with the kernel in one matmul. No Python loop over
taps, no custom kernels: it runs on CPU, GPU and TPU, and JAX differentiates
it w.r.t. the input, the kernel, the offsets and the mask.
``benchmarks/models.py`` times it against the plain convolution it replaces.
"""

from typing import Any, Optional, Sequence, Tuple, Union

import flax.linen as nn
import jax
import jax.numpy as jnp

IntPair = Union[int, Tuple[int, int]]


def _pair(v: IntPair) -> Tuple[int, int]:
  return (v, v) if isinstance(v, int) else tuple(v)


def output_size(size: int, kernel: int, stride: int, padding: int,
                dilation: int) -> int:
  """Output length of a (deformable) convolution along one axis."""
  return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


def _base_grid(h_out, w_out, kernel, stride, padding, dilation):
  """Undeformed sampling positions: ``(Ho, 1, K)`` and ``(1, Wo, K)``."""
  (kh, kw), (sh, sw), (ph, pw), (dh, dw) = kernel, stride, padding, dilation
  ki = jnp.repeat(jnp.arange(kh), kw)  # (K,)
  kj = jnp.tile(jnp.arange(kw), kh)
  ys = (jnp.arange(h_out) * sh - ph)[:, None, None] + (ki * dh)[None, None, :]
  xs = (jnp.arange(w_out) * sw - pw)[None, :, None] + (kj * dw)[None, None, :]
  return ys.astype(jnp.float32), xs.astype(jnp.float32)


_CORNERS = ((0, 0), (0, 1), (1, 0), (1, 1))  # Bilinear corners (dy, dx).


def _corners(shape, offsets, kernel, stride, padding, dilation):
  """Rows and bilinear weights of the 4 corners of every sample.

  Returns:
    ``rows``: 4 int32 ``(B, Ho, Wo, K)`` row indices into the input reshaped
    to ``(B * H * W, C)``, clipped into range; ``weights``: 4 float32
    ``(B, Ho, Wo, K)`` bilinear weights, 0 for a corner outside the image.
  """
  b, h, w, _ = shape
  h_out, w_out = offsets.shape[1:3]
  base_y, base_x = _base_grid(h_out, w_out, kernel, stride, padding, dilation)
  py = base_y[None] + offsets[..., 0]
  px = base_x[None] + offsets[..., 1]
  y0, x0 = jnp.floor(py), jnp.floor(px)
  ly, lx = py - y0, px - x0
  y0, x0 = y0.astype(jnp.int32), x0.astype(jnp.int32)
  batch = jnp.arange(b, dtype=jnp.int32)[:, None, None, None]
  rows, weights = [], []
  for cy, cx in _CORNERS:
    yy, xx = y0 + cy, x0 + cx
    inside = (yy >= 0) & (yy < h) & (xx >= 0) & (xx < w)
    rows.append((batch * h + jnp.clip(yy, 0, h - 1)) * w +
                jnp.clip(xx, 0, w - 1))
    bilinear = (ly if cy else 1 - ly) * (lx if cx else 1 - lx)
    weights.append(jnp.where(inside, bilinear, 0.0))
  return rows, weights


def deform_sample(x: jax.Array, offsets: jax.Array,
                  mask: Optional[jax.Array] = None,
                  kernel_size: IntPair = 3, stride: IntPair = 1,
                  padding: IntPair = 1, dilation: IntPair = 1) -> jax.Array:
  """Bilinearly samples the deformed kernel taps (a deformable im2col).

  Args:
    x: ``(B, H, W, C)`` input, any float dtype (the result keeps it).
    offsets: ``(B, Ho, Wo, K, 2)`` offsets ``(dy, dx)`` of each of the
      ``K = kh * kw`` taps (row-major over the window), in pixels; cast to
      float32 (sampling positions are always computed in float32).
    mask: optional ``(B, Ho, Wo, K)`` modulation (DCNv2) multiplied into each
      tap; ``None`` means 1 (DCNv1).
    kernel_size, stride, padding, dilation: ints or ``(h, w)`` pairs, as for
      the convolution the taps feed.

  Returns:
    ``(B, Ho, Wo, K, C)`` sampled (and modulated) taps, dtype of ``x``.
    Differentiable w.r.t. ``x``, ``offsets`` and ``mask`` by JAX (the
    derivative w.r.t. a position is the one-sided one of the floor-based
    formula, as in torchvision).
  """
  kernel, stride = _pair(kernel_size), _pair(stride)
  padding, dilation = _pair(padding), _pair(dilation)
  b, h, w, c = x.shape
  num_taps = kernel[0] * kernel[1]
  h_out = output_size(h, kernel[0], stride[0], padding[0], dilation[0])
  w_out = output_size(w, kernel[1], stride[1], padding[1], dilation[1])
  if offsets.shape != (b, h_out, w_out, num_taps, 2):
    raise ValueError(f"offsets must have shape {(b, h_out, w_out, num_taps, 2)}"
                     f" for input {x.shape}, got {offsets.shape}.")
  if mask is not None and mask.shape != (b, h_out, w_out, num_taps):
    raise ValueError(f"mask must have shape {(b, h_out, w_out, num_taps)}, "
                     f"got {mask.shape}.")
  rows, weights = _corners(x.shape, offsets.astype(jnp.float32), kernel,
                           stride, padding, dilation)
  if mask is not None:
    weights = [wt * mask.astype(jnp.float32) for wt in weights]
  # One gather per bilinear corner, each fetching whole C-vectors for all taps
  # of all outputs at once, summed elementwise: XLA fuses the four gathers and
  # the weighted sum into one loop (a single gather of (4, C) blocks followed
  # by a reduction over the corners is 1.5-2x slower on CPU).
  flat = jnp.asarray(x).reshape(-1, c)
  out = 0
  for r, wt in zip(rows, weights):
    tap = flat.at[r].get(mode="promise_in_bounds")  # (B, Ho, Wo, K, C)
    out = out + tap * wt[..., None].astype(x.dtype)
  return out.astype(x.dtype)


def deform_conv2d(x: jax.Array, kernel: jax.Array, offsets: jax.Array,
                  mask: Optional[jax.Array] = None, stride: IntPair = 1,
                  padding: IntPair = 1, dilation: IntPair = 1,
                  precision: Any = None) -> jax.Array:
  """Modulated deformable 2-D convolution (DCNv2), NHWC, no bias.

  Args:
    x: ``(B, H, W, C)`` input.
    kernel: ``(kh, kw, C, O)`` kernel (Flax `nn.Conv` layout).
    offsets: ``(B, Ho, Wo, kh * kw, 2)`` offsets ``(dy, dx)`` per tap.
    mask: optional ``(B, Ho, Wo, kh * kw)`` modulation, ``None`` = 1.
    stride, padding, dilation: ints or ``(h, w)`` pairs (symmetric padding).
    precision: passed to the matmul.

  Returns:
    ``(B, Ho, Wo, O)``, the promoted dtype of ``x`` and ``kernel``. With zero
    offsets and mask 1 it equals ``lax.conv_general_dilated`` with the same
    stride, padding ``((p, p), (p, p))`` and dilation.
  """
  kh, kw, c, o = kernel.shape
  if x.shape[-1] != c:
    raise ValueError(f"kernel {kernel.shape} expects {c} input channels, got "
                     f"input {x.shape}.")
  taps = deform_sample(x, offsets, mask, (kh, kw), stride, padding, dilation)
  b, h_out, w_out = taps.shape[:3]
  cols = taps.reshape(b * h_out * w_out, kh * kw * c)
  out = jnp.dot(cols, kernel.reshape(kh * kw * c, o), precision=precision)
  return out.reshape(b, h_out, w_out, o)


class DeformConv(nn.Module):
  """DCNv2 layer: offsets and a sigmoid mask from a zero-initialised conv.

  The parameter ``kernel`` has the layout and name of `nn.Conv`'s, so a plain
  conv's kernel can be loaded into it. ``offset_conv`` (a ``kh x kw`` conv with
  the same stride and padding, ``3 * kh * kw`` outputs: the ``(dy, dx)`` pairs
  of every tap, then the mask logits) starts at zero: at initialisation the
  offsets are 0 and the mask is ``sigmoid(0) = 0.5`` everywhere (DCNv2's own
  initialisation), so the layer starts as the plain conv scaled by 0.5. The
  offset branch always runs in float32; sampling positions need the precision.

  Attributes:
    features: output channels.
    kernel_size, strides, padding: ``padding`` is a symmetric int (pixels).
    use_bias: add a bias after the deformable conv.
    dtype: computation dtype of the sampled taps and the matmul.
    param_dtype: parameter dtype (float32).
    kernel_init: initialiser of ``kernel``.
  """
  features: int
  kernel_size: Sequence[int] = (3, 3)
  strides: Sequence[int] = (1, 1)
  padding: int = 1
  use_bias: bool = False
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  kernel_init: Any = nn.initializers.lecun_normal()

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """``(B, H, W, C)`` -> ``(B, Ho, Wo, features)`` in ``dtype``."""
    kh, kw = self.kernel_size
    num_taps = kh * kw
    pad = ((self.padding, self.padding), (self.padding, self.padding))
    modulation = nn.Conv(
        3 * num_taps, (kh, kw), tuple(self.strides), padding=pad,
        kernel_init=nn.initializers.zeros, bias_init=nn.initializers.zeros,
        dtype=jnp.float32, param_dtype=self.param_dtype,
        name="offset_conv")(x.astype(jnp.float32))
    b, h_out, w_out, _ = modulation.shape
    offsets = modulation[..., :2 * num_taps].reshape(
        b, h_out, w_out, num_taps, 2)
    mask = jax.nn.sigmoid(modulation[..., 2 * num_taps:])
    kernel = self.param("kernel", self.kernel_init,
                        (kh, kw, x.shape[-1], self.features), self.param_dtype)
    y = deform_conv2d(x.astype(self.dtype), kernel.astype(self.dtype), offsets,
                      mask, stride=tuple(self.strides), padding=self.padding)
    if self.use_bias:
      bias = self.param("bias", nn.initializers.zeros, (self.features,),
                        self.param_dtype)
      y = y + bias.astype(self.dtype)
    return y
