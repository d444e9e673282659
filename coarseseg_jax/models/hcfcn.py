"""HCFCN-16 (the paper's model) and its FCN-16 baseline.

Both share the truncated ResNet-34 encoder (`resnet.ResNetEncoder`) and the
FCN head on its stride-16 features (3x3 conv 4w -> head_channels without bias,
BN, ReLU, dropout, 1x1 conv to the classes: torchvision's ``FCNHead``).

* `FCN`: the stride-16 logits are resized bilinearly to the input size (no
  skip connection, as in the paper's code). ``assignments = []``.
* `HCFCN`: for ``s`` in (8, 4) two 1x1 projections without bias (to
  ``sim_features`` channels) of the encoder's stride-``s`` output (the stage
  before the downsampling block: fine) and of the downsampling block's output
  (stride ``2s``: coarse) give ``A_s = superpixels.assign(fine, coarse, tau)``.
  The stride-16 logits are upsampled through ``A_8`` then ``A_4``
  (`superpixels.upsample`) and resized bilinearly from stride 4 to the input
  size. ``assignments = [A_4, A_8]``.

Both take images in [0, 1] of shape ``(B, H, W, 3)`` with H, W multiples of 16
and return float32 logits ``(B, H, W, num_classes)``. The projections, the
assignments and the superpixel upsampling are computed in float32 whatever
``dtype`` is (the softmax over dot products / tau needs the precision).
"""

from typing import Any, List, Sequence, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from coarseseg_jax import superpixels
from coarseseg_jax.models import resnet


def resize_to(x: jax.Array, hw: Tuple[int, int]) -> jax.Array:
  """Bilinear resize of ``(B, h, w, C)`` to ``(B, *hw, C)`` in float32.

  Half-pixel centres: equal to PyTorch's ``F.interpolate(mode='bilinear',
  align_corners=False)`` when upsampling.
  """
  x = x.astype(jnp.float32)
  if tuple(x.shape[1:3]) == tuple(hw):
    return x
  return jax.image.resize(x, (x.shape[0],) + tuple(hw) + (x.shape[-1],),
                          method="bilinear")


class FCNHead(nn.Module):
  """3x3 conv (no bias) + BN + ReLU + dropout + 1x1 conv to the classes.

  Attributes:
    num_classes: output channels.
    channels: channels of the 3x3 conv.
    dropout: dropout rate (active when ``train``).
    dtype: computation dtype.
  """
  num_classes: int
  channels: int = 64
  dropout: float = 0.1
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    """``(B, h, w, C)`` -> ``(B, h, w, num_classes)`` logits in ``dtype``."""
    x = resnet.conv(self.channels, 3, dtype=self.dtype, name="conv")(x)
    x = nn.relu(resnet.batch_norm(train, self.dtype, "bn")(x))
    x = nn.Dropout(self.dropout, deterministic=not train)(x)
    return nn.Conv(self.num_classes, (1, 1), dtype=self.dtype,
                   name="classifier")(x)


class FCN(nn.Module):
  """FCN-16 baseline: encoder + head, bilinear upsampling from stride 16.

  Attributes:
    num_classes, stage_blocks, width, deformable, head_channels, dropout,
    dtype: as in ``config.model``.
  """
  num_classes: int
  stage_blocks: Sequence[int] = (3, 4, 6)
  width: int = 64
  deformable: bool = True
  head_channels: int = 64
  dropout: float = 0.1
  dtype: Any = jnp.float32

  def _encode(self, images, train):
    resnet.check_size(images)
    encoder = resnet.ResNetEncoder(tuple(self.stage_blocks), self.width,
                                   self.deformable, self.dtype, name="encoder")
    return encoder(resnet.normalise(images, self.dtype), train)

  def _head(self, feats, train):
    return FCNHead(self.num_classes, self.head_channels, self.dropout,
                   self.dtype, name="head")(feats["layer3"], train)

  @nn.compact
  def __call__(self, images: jax.Array,
               train: bool = False) -> Tuple[jax.Array, List[jax.Array]]:
    """``(B, H, W, 3)`` in [0, 1] -> (float32 ``(B, H, W, classes)``, [])."""
    feats = self._encode(images, train)
    logits = self._head(feats, train)
    return resize_to(logits, images.shape[1:3]), []


class HCFCN(FCN):
  """HCFCN-16: FCN-16 decoded through learned soft superpixels.

  Attributes (besides `FCN`'s):
    tau: softmax temperature of the assignments.
    sim_features: channels of the similarity projections (48).
    similarity: 'dot' | 'cosine', see `superpixels.assign`.
  """
  tau: float = 0.07
  sim_features: int = 48
  similarity: str = "dot"

  def _project(self, x, name):
    return nn.Conv(self.sim_features, (1, 1), use_bias=False,
                   dtype=jnp.float32, name=name)(x.astype(jnp.float32))

  @nn.compact
  def __call__(self, images: jax.Array,
               train: bool = False) -> Tuple[jax.Array, List[jax.Array]]:
    """Segments images.

    Args:
      images: ``(B, H, W, 3)`` in [0, 1], H and W multiples of 16.
      train: batch statistics in BN and dropout on (needs a 'dropout' rng).

    Returns:
      ``(logits, [A_4, A_8])``: float32 ``(B, H, W, num_classes)`` logits and
      float32 assignments ``(B, H/4, W/4, 9)``, ``(B, H/8, W/8, 9)``.
    """
    feats = self._encode(images, train)
    logits = self._head(feats, train).astype(jnp.float32)
    # (stride s, fine features at s, coarse features at 2s), coarsest first.
    levels = ((8, feats["layer2"], feats["layer3_down"]),
              (4, feats["layer1"], feats["layer2_down"]))
    assignments = []
    for s, fine, coarse in levels:
      a = superpixels.assign(self._project(fine, f"proj_fine{s}"),
                             self._project(coarse, f"proj_coarse{s}"),
                             tau=self.tau, similarity=self.similarity)
      logits = superpixels.upsample(logits, a)
      assignments.insert(0, a)
    return resize_to(logits, images.shape[1:3]), assignments
