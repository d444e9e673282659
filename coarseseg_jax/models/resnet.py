"""ResNet-34-style encoder truncated after its stride-16 stage (NHWC).

Layout (torchvision's resnet34 up to ``layer3``, widths for ``width = 64``):

    conv1   7x7/2 conv (no bias) + bn1 + ReLU           stride 2   ('stem')
            3x3/2 max-pool (padding 1)                  stride 4
    layer1  stage_blocks[0] basic blocks, 64 channels   stride 4   ('layer1')
    layer2  a downsampling block + stage_blocks[1] - 1  stride 8   ('layer2')
    layer3  a downsampling block + stage_blocks[2] - 1  stride 16  ('layer3')

The downsampling block's output is also returned (``'layer2_down'``,
``'layer3_down'``): the superpixel decoder uses it as the coarse features. In a
downsampling block both the first 3x3 conv (stride 2) and the shortcut (a 3x3
stride-2 conv + BN, the paper's choice; torchvision uses a 1x1 conv there) are
modulated deformable convolutions (`deformable.DeformConv`), or plain strided
convs with ``deformable=False``.

Parameter names follow torchvision's (``conv1``, ``bn1``, ``layer2_0/conv1``,
``layer2_0/downsample_conv``, ...) so that `pretrained.convert_resnet34` is a
renaming. Convolutions use explicit symmetric padding (as PyTorch does), never
``'SAME'``, whose stride-2 padding is asymmetric.

Options that name the differences from the authors' code (`configs/default.py`):
``weight_init`` (`INITS`: ``"he_fan_out"``, torchvision's ResNet init, or
``"pytorch"``, PyTorch's layer defaults as the authors' model has them),
``deform_bias`` (the authors' deformable convs carry a bias) and, in the models,
``input_norm`` (`normalise_input`).
"""

import functools
from typing import Any, Dict, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from coarseseg_jax.models import deformable
from coarseseg_jax.models import pooling

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# torchvision's ResNet init: He normal, fan_out.
conv_init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")
# PyTorch's Conv2d default (kaiming_uniform with a = sqrt(5)): U(+-1/sqrt(fan_in)),
# fan_in = kh * kw * in_channels. Also the authors' DCN kernel.
torch_conv_init = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in",
                                                   "uniform")
INITS = ("he_fan_out", "pytorch")
INPUT_NORMS = ("imagenet", "none")


def kernel_init(init: str):
  """The conv kernel initialiser of an ``init`` option (`INITS`)."""
  if init not in INITS:
    raise ValueError(f"model.weight_init must be one of {INITS}, got {init!r}.")
  return conv_init if init == "he_fan_out" else torch_conv_init


def torch_bias_init(fan_in: int):
  """PyTorch's default conv / linear bias: U(+-1/sqrt(fan_in))."""
  bound = 1.0 / float(fan_in) ** 0.5

  def init(key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, shape, dtype, -bound, bound)

  return init


def normalise(images: jax.Array, dtype: Any = jnp.float32) -> jax.Array:
  """``(B, H, W, 3)`` images in [0, 1] -> ImageNet-normalised, in ``dtype``."""
  x = images.astype(jnp.float32)
  x = (x - jnp.asarray(IMAGENET_MEAN)) / jnp.asarray(IMAGENET_STD)
  return x.astype(dtype)


def normalise_input(images: jax.Array, input_norm: str,
                    dtype: Any = jnp.float32) -> jax.Array:
  """The encoder's input: ``"imagenet"`` (`normalise`) or ``"none"`` (the
  [0, 1] images as they are, as the authors' code feeds them)."""
  if input_norm not in INPUT_NORMS:
    raise ValueError(f"model.input_norm must be one of {INPUT_NORMS}, got "
                     f"{input_norm!r}.")
  if input_norm == "none":
    return images.astype(dtype)
  return normalise(images, dtype)


def check_size(images: jax.Array, multiple: int = 16) -> None:
  """ValueError unless ``images`` is ``(B, H, W, 3)``, H, W multiples."""
  if images.ndim != 4 or images.shape[-1] != 3:
    raise ValueError(f"images must be (batch, height, width, 3), got shape "
                     f"{tuple(images.shape)}.")
  h, w = images.shape[1:3]
  if h % multiple or w % multiple or h == 0 or w == 0:
    raise ValueError(
        f"image height and width must be positive multiples of {multiple}, got "
        f"{h}x{w}; crop or pad the images (e.g. data.crop_size).")


def batch_norm(train: bool, dtype: Any, name: str) -> nn.BatchNorm:
  """PyTorch-equivalent BN: momentum 0.1 (Flax 0.9), epsilon 1e-5."""
  return nn.BatchNorm(use_running_average=not train, momentum=0.9,
                      epsilon=1e-5, dtype=dtype, name=name)


def conv(features: int, kernel: int, stride: int = 1, *, dtype: Any,
         name: str, use_bias: bool = False, kernel_init=conv_init) -> nn.Conv:
  """A PyTorch-style conv: symmetric padding ``kernel // 2``."""
  p = kernel // 2
  return nn.Conv(features, (kernel, kernel), (stride, stride),
                 padding=((p, p), (p, p)), use_bias=use_bias, dtype=dtype,
                 kernel_init=kernel_init, name=name)


def strided_conv(features: int, deform: bool, *, dtype: Any, name: str,
                 weight_init: str = "he_fan_out",
                 deform_bias: bool = False) -> nn.Module:
  """The 3x3 stride-2 conv of a downsampling block: DCNv2 (with a zero-
  initialised bias when ``deform_bias``, as the authors') or plain."""
  if deform:
    return deformable.DeformConv(features, (3, 3), (2, 2), padding=1,
                                 use_bias=deform_bias, dtype=dtype,
                                 kernel_init=kernel_init(weight_init), name=name)
  return conv(features, 3, 2, dtype=dtype, name=name,
              kernel_init=kernel_init(weight_init))


class BasicBlock(nn.Module):
  """ResNet basic block; ``downsample=True`` halves the resolution.

  Attributes:
    features: output channels.
    downsample: stride 2 and a 3x3/2 conv + BN shortcut (deformable when
      ``deformable``); otherwise stride 1 and the identity shortcut.
    deformable: DCNv2 for the strided conv and the shortcut.
    dtype: computation dtype.
    weight_init: kernel initialisation (`INITS`).
    deform_bias: the deformable convs have a bias (the authors').
  """
  features: int
  downsample: bool = False
  deformable: bool = True
  dtype: Any = jnp.float32
  weight_init: str = "he_fan_out"
  deform_bias: bool = False

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    """``(B, H, W, C)`` -> ``(B, H/s, W/s, features)``, s = 2 if downsample."""
    k_init = kernel_init(self.weight_init)
    if self.downsample:
      down = functools.partial(strided_conv, self.features, self.deformable,
                               dtype=self.dtype, weight_init=self.weight_init,
                               deform_bias=self.deform_bias)
      y = down(name="conv1")(x)
      shortcut = down(name="downsample_conv")(x)
      shortcut = batch_norm(train, self.dtype, "downsample_bn")(shortcut)
    else:
      if x.shape[-1] != self.features:
        raise ValueError("an identity shortcut needs equal channel counts.")
      y = conv(self.features, 3, 1, dtype=self.dtype, name="conv1",
               kernel_init=k_init)(x)
      shortcut = x
    y = nn.relu(batch_norm(train, self.dtype, "bn1")(y))
    y = conv(self.features, 3, 1, dtype=self.dtype, name="conv2",
             kernel_init=k_init)(y)
    y = batch_norm(train, self.dtype, "bn2")(y)
    return nn.relu(y + shortcut)


class ResNetEncoder(nn.Module):
  """ResNet-34-style encoder up to stride 16 (see the module docstring).

  Attributes:
    stage_blocks: blocks of layer1, layer2, layer3 (ResNet-34: (3, 4, 6));
      layer2 and layer3 count their downsampling block.
    width: channels of layer1 (ResNet-34: 64); layer2 / layer3 have 2x / 4x.
    deformable: DCNv2 in the downsampling blocks.
    dtype: computation dtype (parameters stay float32).
    weight_init: kernel initialisation (`INITS`).
    deform_bias: the deformable convs have a bias (the authors').
  """
  stage_blocks: Sequence[int] = (3, 4, 6)
  width: int = 64
  deformable: bool = True
  dtype: Any = jnp.float32
  weight_init: str = "he_fan_out"
  deform_bias: bool = False

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> Dict[str, jax.Array]:
    """Encodes normalised images.

    Args:
      x: ``(B, H, W, 3)`` normalised images, H and W multiples of 16.
      train: batch statistics (True) or running averages (False) in BN.

    Returns:
      dict of ``dtype`` features: ``'stem'`` ``(B, H/2, W/2, width)``,
      ``'layer1'`` ``(B, H/4, W/4, width)``, ``'layer2_down'`` and ``'layer2'``
      ``(B, H/8, W/8, 2 width)``, ``'layer3_down'`` and ``'layer3'``
      ``(B, H/16, W/16, 4 width)``.
    """
    if len(self.stage_blocks) != 3 or min(self.stage_blocks) < 1:
      raise ValueError("stage_blocks must be 3 positive block counts (layer1, "
                       f"layer2, layer3), got {tuple(self.stage_blocks)}.")
    feats = {}
    x = conv(self.width, 7, 2, dtype=self.dtype, name="conv1",
             kernel_init=kernel_init(self.weight_init))(x)
    x = nn.relu(batch_norm(train, self.dtype, "bn1")(x))
    feats["stem"] = x
    x = pooling.max_pool_3x3_s2(x)  # = nn.max_pool(x, (3, 3), (2, 2), pad 1)
    for stage, num_blocks in enumerate(self.stage_blocks):
      features = self.width * 2 ** stage
      for i in range(num_blocks):
        down = stage > 0 and i == 0
        x = BasicBlock(features, downsample=down, deformable=self.deformable,
                       dtype=self.dtype, weight_init=self.weight_init,
                       deform_bias=self.deform_bias,
                       name=f"layer{stage + 1}_{i}")(x, train)
        if down:
          feats[f"layer{stage + 1}_down"] = x
      feats[f"layer{stage + 1}"] = x
    return feats


def encoder_from_config(model_config, name: str = "encoder") -> ResNetEncoder:
  """The `ResNetEncoder` a ``config.model`` describes."""
  return ResNetEncoder(stage_blocks=tuple(model_config.stage_blocks),
                       width=model_config.width,
                       deformable=model_config.deformable,
                       dtype=get_dtype(model_config),
                       weight_init=model_config.weight_init,
                       deform_bias=model_config.deform_bias, name=name)


def get_dtype(model_config) -> Any:
  """``config.model.dtype`` ('float32' | 'bfloat16') -> a jnp dtype."""
  dtypes = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
  name = str(model_config.dtype)
  if name not in dtypes:
    raise ValueError(f"model.dtype must be one of {sorted(dtypes)}, got "
                     f"{name!r}.")
  return dtypes[name]
