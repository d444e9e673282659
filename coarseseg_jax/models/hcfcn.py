"""HCFCN-16 (the paper's model) and its FCN-16 baseline.

Both share the truncated ResNet-34 encoder (`resnet.ResNetEncoder`) and the
FCN head on its stride-16 features (3x3 conv 4w -> head_channels without bias,
BN, ReLU, dropout, 1x1 conv to the classes: torchvision's ``FCNHead``).

* `FCN`: the stride-16 logits are resized bilinearly to the input size (no
  skip connection, as in the authors' code). ``assignments = []``.
* `HCFCN`: for ``s`` in (8, 4) two 1x1 projections without bias (to
  ``sim_features`` channels) of the encoder's stride-``s`` output (the stage
  before the downsampling block: fine) and of the downsampling block's output
  (stride ``2s``: coarse) give ``A_s = superpixels.assign(fine, coarse, tau)``.
  The stride-16 logits are upsampled through ``A_8`` then ``A_4``
  (`superpixels.upsample`) and resized bilinearly from stride 4 to the input
  size. ``assignments = [A_4, A_8]``. The similarity options are
  listed in `HCFCN`'s docstring.

Both take images in [0, 1] of shape ``(B, H, W, 3)`` with H, W multiples of 16
and return float32 logits ``(B, H, W, num_classes)``. With ``input_norm="none"``,
``weight_init="pytorch"``, ``deform_bias=True`` and (HCFCN) ``similarity="dot"``,
``out_of_grid="zero"``, tau 0.07 and 48 similarity features they compute the
authors' ``SegModel`` (`pretrained.from_authors` loads its weights); the other
values are the project's options (`configs/default.py`). The projections, the
assignments and the superpixel upsampling are computed in float32 whatever
``dtype`` is (the softmax over dot products / tau needs the precision), and
all their parameters are float32.
"""

import math
from typing import Any, Dict, List, Optional, Sequence, Tuple

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
    weight_init: ``"he_fan_out"`` (He for the 3x3 conv, Flax's defaults for the
      classifier) or ``"pytorch"`` (PyTorch's defaults, as the authors').
  """
  num_classes: int
  channels: int = 64
  dropout: float = 0.1
  dtype: Any = jnp.float32
  weight_init: str = "he_fan_out"

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    """``(B, h, w, C)`` -> ``(B, h, w, num_classes)`` logits in ``dtype``."""
    x = resnet.conv(self.channels, 3, dtype=self.dtype, name="conv",
                    kernel_init=resnet.kernel_init(self.weight_init))(x)
    x = nn.relu(resnet.batch_norm(train, self.dtype, "bn")(x))
    x = nn.Dropout(self.dropout, deterministic=not train)(x)
    kw = {}
    if self.weight_init == "pytorch":
      kw = dict(kernel_init=resnet.torch_conv_init,
                bias_init=resnet.torch_bias_init(self.channels))
    return nn.Conv(self.num_classes, (1, 1), dtype=self.dtype,
                   name="classifier", **kw)(x)


class FCN(nn.Module):
  """FCN-16 baseline: encoder + head, bilinear upsampling from stride 16.

  Attributes:
    num_classes, stage_blocks, width, deformable, head_channels, dropout,
    dtype, input_norm, weight_init, deform_bias: as in ``config.model``.
  """
  num_classes: int
  stage_blocks: Sequence[int] = (3, 4, 6)
  width: int = 64
  deformable: bool = True
  head_channels: int = 64
  dropout: float = 0.1
  dtype: Any = jnp.float32
  input_norm: str = "imagenet"
  weight_init: str = "he_fan_out"
  deform_bias: bool = False

  def _encode(self, images, train):
    resnet.check_size(images)
    encoder = resnet.ResNetEncoder(tuple(self.stage_blocks), self.width,
                                   self.deformable, self.dtype, self.weight_init,
                                   self.deform_bias, name="encoder")
    return encoder(resnet.normalise_input(images, self.input_norm,
                                          self.dtype), train)

  def _head(self, feats, train):
    return FCNHead(self.num_classes, self.head_channels, self.dropout,
                   self.dtype, self.weight_init, name="head")(feats["layer3"], train)

  @nn.compact
  def __call__(self, images: jax.Array,
               train: bool = False) -> Tuple[jax.Array, List[jax.Array]]:
    """``(B, H, W, 3)`` in [0, 1] -> (float32 ``(B, H, W, classes)``, [])."""
    feats = self._encode(images, train)
    logits = self._head(feats, train)
    return resize_to(logits, images.shape[1:3]), []


SIMILARITIES = ("dot", "cosine", "hcformer")
ASSIGN_INITS = ("default", "zero")
# Range of the learnable temperature of similarity="hcformer" (the log is
# clipped): cosine logits span [-1/tau, 1/tau], so tau = 0.01 allows logit gaps
# of 200 (saturated, as CLIP's logit-scale cap of 100) and tau = 1 leaves
# every assignment within a factor e^2 of uniform.
TAU_RANGE = (0.01, 1.0)


def check_assign_options(similarity: str, tau: float, assign_init: str,
                         parent_bias: Optional[float],
                         out_of_grid: str = "mask") -> None:
  """Raises ValueError for an invalid combination of `HCFCN`'s options."""
  if out_of_grid not in superpixels.OUT_OF_GRID:
    raise ValueError(f"model.out_of_grid must be one of "
                     f"{superpixels.OUT_OF_GRID}, got {out_of_grid!r}.")
  if similarity not in SIMILARITIES:
    raise ValueError(f"model.similarity must be one of {SIMILARITIES}, got "
                     f"{similarity!r}.")
  if assign_init not in ASSIGN_INITS:
    raise ValueError(f"model.assign_init must be one of {ASSIGN_INITS}, got "
                     f"{assign_init!r}.")
  if not tau > 0:
    raise ValueError(f"model.tau must be > 0, got {tau}.")
  if similarity == "hcformer" and not TAU_RANGE[0] <= tau <= TAU_RANGE[1]:
    raise ValueError(f"model.tau={tau} initialises the learnable temperature "
                     f"of similarity='hcformer'; it must lie in {TAU_RANGE}.")
  if assign_init == "zero" and similarity != "dot":
    raise ValueError(
        "model.assign_init='zero' needs model.similarity='dot': a zero "
        "projection has no direction to normalise (its gradient through the "
        "L2 normalisation is 1/eps); start cosine / hcformer near uniform "
        "with a larger model.tau instead.")
  if parent_bias is not None and not math.isfinite(parent_bias):
    raise ValueError(f"model.parent_bias must be None or finite, got "
                     f"{parent_bias}.")


class HCFCN(FCN):
  """HCFCN-16: FCN-16 decoded through learned soft superpixels.

  Similarity options (``similarity``), per level s in (8, 4):

  * ``"dot"``: the authors' code. 1x1 projections (default init),
    raw dot product / tau (fixed). At tau = 0.07 an untrained model's
    assignments are saturated (entropy far below log 9, argmax on the parent
    at chance level).
  * ``"cosine"``: the method's text (the thesis): the same projections, both
    L2-normalised, / tau (fixed). The configs' default, with tau 0.05: on
    validation data it trained far better than ``"dot"``
    (results/README.md, "How the similarity was chosen"). The attributes'
    defaults here stay the paper's code.
  * ``"hcformer"``: HCFormer's clustering module (Suzuki, "Clustering as
    attention: unified image segmentation with hierarchical clustering",
    arXiv 2205.09949; ``Clustering`` in github.com/DensoITLab/HCFormer,
    hcformer/modeling/backbone/utils.py): LayerNorm over channels (with
    affine, epsilon 1e-5), 1x1 projection without bias, L2 normalisation,
    and a learnable temperature per level initialised to ``tau`` (HCFormer:
    0.05). Stored as ``log_tau{s}`` and used as ``exp(clip(log_tau,
    log TAU_RANGE))`` (HCFormer stores tau itself, ``abs(tau) + 1e-8``).

  Initialisation options (defaults: the paper's):

  * ``assign_init="zero"`` (``"dot"`` only): the fine projection's kernel
    starts at 0, so every logit is 0 and the assignments start uniform over
    the in-grid candidates; at the first step no gradient reaches the
    encoder through the similarity path (the coarse projection's gradient is
    0 too, the fine one's is not).
  * ``parent_bias=b`` (a float; ``None``: none): a learnable logit per level
    (``parent_bias{s}``, initialised to b) added to the parent cell's logit
    (`superpixels.assign`). With ``assign_init="zero"`` the assignments start
    as a soft grid: parent weight ``e^b / (e^b + 8)`` inside the grid.

  Attributes (besides `FCN`'s):
    tau: softmax temperature of the assignments (fixed), or the initial value
      of the learnable one (``"hcformer"``, within `TAU_RANGE`).
    sim_features: channels of the similarity projections (48).
    similarity: ``'dot'`` | ``'cosine'`` | ``'hcformer'``, see above.
    assign_init: ``'default'`` | ``'zero'``, see above.
    parent_bias: initial learnable parent-cell logit, or None (none).
    out_of_grid: ``"mask"`` or ``"zero"`` (the authors': zero-padded
      candidates with similarity 0 take part), see `superpixels.assign`.
  """
  tau: float = 0.07
  sim_features: int = 48
  similarity: str = "dot"
  assign_init: str = "default"
  parent_bias: Optional[float] = None
  out_of_grid: str = "mask"

  def _project(self, x, name, zero=False):
    x = x.astype(jnp.float32)
    if self.similarity == "hcformer":
      x = nn.LayerNorm(epsilon=1e-5, dtype=jnp.float32,
                       param_dtype=jnp.float32, name=f"{name}_norm")(x)
    kw = {}
    if zero:
      kw = {"kernel_init": nn.initializers.zeros}
    elif self.weight_init == "pytorch":
      kw = {"kernel_init": resnet.torch_conv_init}
    return nn.Conv(self.sim_features, (1, 1), use_bias=False,
                   dtype=jnp.float32, param_dtype=jnp.float32, name=name,
                   **kw)(x)

  def _assign(self, fine, coarse, s):
    """``A_s`` from the encoder's fine (stride s) and coarse (2s) features."""
    fine = self._project(fine, f"proj_fine{s}",
                         zero=self.assign_init == "zero")
    coarse = self._project(coarse, f"proj_coarse{s}")
    tau, similarity = self.tau, self.similarity
    if similarity == "hcformer":
      log_tau = self.param(f"log_tau{s}", nn.initializers.constant(
          math.log(self.tau)), (), jnp.float32)
      tau, similarity = learned_tau(log_tau), "cosine"
    bias = None
    if self.parent_bias is not None:
      bias = self.param(f"parent_bias{s}", nn.initializers.constant(
          self.parent_bias), (), jnp.float32)
    return superpixels.assign(fine, coarse, tau=tau, similarity=similarity,
                              parent_bias=bias, out_of_grid=self.out_of_grid)

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
    check_assign_options(self.similarity, self.tau, self.assign_init,
                         self.parent_bias, self.out_of_grid)
    feats = self._encode(images, train)
    logits = self._head(feats, train).astype(jnp.float32)
    # (stride s, fine features at s, coarse features at 2s), coarsest first.
    levels = ((8, feats["layer2"], feats["layer3_down"]),
              (4, feats["layer1"], feats["layer2_down"]))
    assignments = []
    for s, fine, coarse in levels:
      a = self._assign(fine, coarse, s)
      logits = superpixels.upsample(logits, a)
      assignments.insert(0, a)
    return resize_to(logits, images.shape[1:3]), assignments


def learned_tau(log_tau: jax.Array) -> jax.Array:
  """The temperature a ``log_tau{s}`` parameter stands for (clipped to
  `TAU_RANGE`); the gradient is 0 outside the range."""
  lo, hi = TAU_RANGE
  return jnp.exp(jnp.clip(log_tau, math.log(lo), math.log(hi)))


def assign_parameters(params: Dict[str, Any]) -> Dict[str, jax.Array]:
  """The learnable scalars of the assignments, for logging.

  Args:
    params: an `HCFCN`'s ``variables['params']`` (other models: no entries).

  Returns:
    ``{"a{s}_tau": tau, "a{s}_parent_bias": b}`` for the levels s that have
    them (``similarity="hcformer"``; ``parent_bias`` set): float32 scalars.
  """
  out = {}
  for s in (4, 8):
    if f"log_tau{s}" in params:
      out[f"a{s}_tau"] = learned_tau(params[f"log_tau{s}"])
    if f"parent_bias{s}" in params:
      out[f"a{s}_parent_bias"] = jnp.asarray(params[f"parent_bias{s}"])
  return out
