"""U-Net baseline on the truncated ResNet-34 encoder (depth 4).

What is built (``segmentation_models_pytorch.Unet('resnet34', encoder_depth=4,
decoder_channels=(128, 64, 32, 16))`` with this project's encoder):

* encoder: `resnet.ResNetEncoder`, deformable downsampling blocks as in
  HCFCN. "Depth 4" means four encoder stages below the input (stem at stride 2,
  layer1 at 4, layer2 at 8, layer3 at 16); ResNet-34's layer4 (stride 32) is
  not built, so the bottleneck is layer3 at stride 16 and inputs only need to
  be multiples of 16.
* decoder: four blocks, each a 2x nearest upsampling, concatenation with the
  encoder skip of that stride, then two (3x3 conv without bias + BN + ReLU):

      block   output stride   skip (channels for width 64)    out channels
      0       8               layer2 (128)                    128
      1       4               layer1 (64)                     64
      2       2               stem, before max-pool (64)      32
      3       1               none                            16

  ``decoder_channels`` defaults to (128, 64, 32, 16) whatever ``width`` is.
* head: a 3x3 conv with bias to the classes at full resolution (smp's
  ``SegmentationHead``). No dropout (smp's U-Net has none), so
  ``config.model.dropout`` is unused here.

Returns ``(logits, [])``: float32 ``(B, H, W, num_classes)``.
"""

from typing import Any, List, Sequence, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from coarseseg_jax.models import resnet


class DecoderBlock(nn.Module):
  """2x nearest upsampling, optional skip concatenation, 2x conv-BN-ReLU."""
  features: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, skip, train: bool) -> jax.Array:
    """``(B, h, w, C)`` [+ skip ``(B, 2h, 2w, S)``] -> ``(B, 2h, 2w, F)``."""
    x = jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)
    if skip is not None:
      x = jnp.concatenate([x, skip.astype(x.dtype)], axis=-1)
    for i in (1, 2):
      x = resnet.conv(self.features, 3, dtype=self.dtype, name=f"conv{i}")(x)
      x = nn.relu(resnet.batch_norm(train, self.dtype, f"bn{i}")(x))
    return x


class UNet(nn.Module):
  """U-Net, ResNet-34 encoder truncated at stride 16, see the module docstring.

  Attributes:
    num_classes, stage_blocks, width, deformable, dtype: as in
      ``config.model``.
    decoder_channels: output channels of the 4 decoder blocks.
  """
  num_classes: int
  stage_blocks: Sequence[int] = (3, 4, 6)
  width: int = 64
  deformable: bool = True
  decoder_channels: Sequence[int] = (128, 64, 32, 16)
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, images: jax.Array,
               train: bool = False) -> Tuple[jax.Array, List[jax.Array]]:
    """``(B, H, W, 3)`` in [0, 1] -> (float32 ``(B, H, W, classes)``, [])."""
    resnet.check_size(images)
    if len(self.decoder_channels) != 4:
      raise ValueError("the depth-4 U-Net needs 4 decoder_channels, got "
                       f"{tuple(self.decoder_channels)}.")
    feats = resnet.ResNetEncoder(
        tuple(self.stage_blocks), self.width, self.deformable, self.dtype,
        name="encoder")(resnet.normalise(images, self.dtype), train)
    x = feats["layer3"]
    skips = (feats["layer2"], feats["layer1"], feats["stem"], None)
    for i, (features, skip) in enumerate(zip(self.decoder_channels, skips)):
      x = DecoderBlock(features, self.dtype, name=f"decoder{i}")(x, skip, train)
    logits = resnet.conv(self.num_classes, 3, dtype=self.dtype, use_bias=True,
                         kernel_init=nn.initializers.lecun_normal(),
                         name="classifier")(x)
    return logits.astype(jnp.float32), []
