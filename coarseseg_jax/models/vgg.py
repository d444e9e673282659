"""The classic FCN-16s (Long, Shelhamer & Darrell): VGG-16 trunk, pool4 skip.

For users who mean the original architecture by "FCN-16":

    conv1_1..conv5_3   VGG-16's 13 3x3 convs (bias, ReLU), 2x2 max-pools
    fc6                7x7 conv, 64 * width (4096) channels, ReLU, dropout 0.5
    fc7                1x1 conv, 64 * width (4096) channels, ReLU, dropout 0.5
    score_fr           1x1 conv to the classes (stride 32)
    upscore2           learned 2x upsampling (4x4 transposed conv, stride 2,
                       bilinear init, no bias) to stride 16
    score_pool4        1x1 conv of pool4 to the classes, added (the skip)
    upscore16          learned 16x upsampling (32x32 transposed conv, stride
                       16, bilinear init, no bias) to the input size

Differences from the Caffe original, which pads the input by 100 pixels and
crops: convs use padding 1 (fc6 padding 3), pool5 pads at the bottom/right
(ceil mode) so inputs only need to be multiples of 16, and the transposed
convs are cropped symmetrically (PyTorch ``padding = stride / 2``). Channel
widths scale with ``width`` (64: VGG-16's 64/128/256/512/512 and 4096).
``stage_blocks``, ``deformable``, ``head_channels`` and ``dropout`` do not
apply (the fc dropout is the original 0.5). There is no BN, hence no
``batch_stats``. Parameter names follow the Caffe layer names so that
`pretrained.convert_vgg16` can map torchvision's ``vgg16`` onto them.
Returns ``(logits, [])``: float32 ``(B, H, W, num_classes)``.
"""

from typing import Any, List, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from coarseseg_jax.models import resnet

# (stage, number of convs, channel multiplier of width).
VGG16_STAGES = ((1, 2, 1), (2, 2, 2), (3, 3, 4), (4, 3, 8), (5, 3, 8))
FC_DROPOUT = 0.5


def bilinear_kernel_init(key, shape, dtype=jnp.float32):
  """``(k, k, C, C)`` kernel: each channel upsampled bilinearly, no mixing."""
  del key
  k, _, c_in, c_out = shape
  factor = (k + 1) // 2
  centre = factor - 1 if k % 2 == 1 else factor - 0.5
  og = np.arange(k)
  filt = 1 - np.abs(og - centre) / factor
  filt2d = filt[:, None] * filt[None, :]
  kernel = np.zeros(shape, np.float32)
  for c in range(min(c_in, c_out)):
    kernel[:, :, c, c] = filt2d
  return jnp.asarray(kernel, dtype)


def _learned_upsample(x, factor, dtype, name):
  """Transposed conv (kernel 2 * factor, stride factor), cropped factor / 2."""
  c = x.shape[-1]
  y = nn.ConvTranspose(c, (2 * factor, 2 * factor), (factor, factor),
                       padding="VALID", use_bias=False, dtype=dtype,
                       kernel_init=bilinear_kernel_init, name=name)(x)
  crop = factor // 2
  return y[:, crop:y.shape[1] - crop, crop:y.shape[2] - crop]


class FCN16sVGG(nn.Module):
  """FCN-16s on VGG-16, see the module docstring.

  Attributes:
    num_classes: output channels.
    width: channels of the first stage (VGG-16: 64).
    dtype: computation dtype.
  """
  num_classes: int
  width: int = 64
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, images: jax.Array,
               train: bool = False) -> Tuple[jax.Array, List[jax.Array]]:
    """``(B, H, W, 3)`` in [0, 1] -> (float32 ``(B, H, W, classes)``, [])."""
    resnet.check_size(images)
    h, w = images.shape[1:3]
    x = resnet.normalise(images, self.dtype)
    dense = lambda feats, k, name: resnet.conv(  # pylint: disable=g-long-lambda
        feats, k, dtype=self.dtype, use_bias=True,
        kernel_init=nn.initializers.lecun_normal(), name=name)
    pool4 = None
    for stage, num_convs, mult in VGG16_STAGES:
      for i in range(num_convs):
        x = nn.relu(dense(self.width * mult, 3, f"conv{stage}_{i + 1}")(x))
      pad = ((0, x.shape[1] % 2), (0, x.shape[2] % 2))  # ceil mode (pool5).
      x = nn.max_pool(x, (2, 2), (2, 2), padding=pad)
      if stage == 4:
        pool4 = x
    for name, k in (("fc6", 7), ("fc7", 1)):
      x = nn.relu(dense(64 * self.width, k, name)(x))
      x = nn.Dropout(FC_DROPOUT, deterministic=not train)(x)
    score = dense(self.num_classes, 1, "score_fr")(x)
    score = _learned_upsample(score, 2, self.dtype, "upscore2")
    score = score[:, :h // 16, :w // 16]  # pool5 may have been ceil'd.
    score = score + dense(self.num_classes, 1, "score_pool4")(pool4)
    logits = _learned_upsample(score, 16, self.dtype, "upscore16")
    return logits.astype(jnp.float32), []
