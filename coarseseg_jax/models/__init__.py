"""Segmentation models, built from ``config.model`` by `create_model`.

Every model is a Flax linen module, a pure function of ``(variables, images)``
through ``model.apply``:

    variables = model.init({'params': key}, images, train=False)
    logits, assignments = model.apply(variables, images, train=False)
    (logits, assignments), new_state = model.apply(
        variables, images, train=True, rngs={'dropout': key},
        mutable=['batch_stats'])

``images`` is ``(B, H, W, 3)`` in [0, 1] (the models normalise with ImageNet's
mean / std themselves), H and W multiples of 16 (a ValueError otherwise).
``logits`` is float32 ``(B, H, W, num_classes)``; ``assignments`` the float32
soft superpixel assignments ordered finest first (``[A_4, A_8]`` for
``hcfcn``, see `coarseseg_jax.superpixels`), empty for the other models.

Models (``config.model.name``):
  hcfcn       the paper's HCFCN-16 (`hcfcn.HCFCN`).
  fcn         the paper's FCN-16 baseline (`hcfcn.FCN`).
  unet        U-Net on the same encoder, depth 4 (`unet.UNet`).
  fcn16s_vgg  the classic FCN-16s on VGG-16 (`vgg.FCN16sVGG`).

``config.model.dtype = 'bfloat16'`` computes in bfloat16 with float32
parameters; logits, assignments and the superpixel decoder stay float32.

``hcfcn``'s assignment options (``similarity``, ``tau``, ``assign_init``,
``parent_bias``) are described in `hcfcn.HCFCN`;
`hcfcn.assign_parameters(params)` gives its learnable temperature / parent
bias and `coarseseg_jax.assignment_stats.summary(assignments)` diagnostics of
the assignments, both for logging.
"""

import functools

import jax
import jax.numpy as jnp
import flax.linen as nn

from coarseseg_jax.models import deformable
from coarseseg_jax.models import hcfcn
from coarseseg_jax.models import pretrained
from coarseseg_jax.models import resnet
from coarseseg_jax.models import unet
from coarseseg_jax.models import vgg

MODEL_NAMES = ("hcfcn", "fcn", "unet", "fcn16s_vgg")
# config.model.pretrained_format: a torchvision backbone, or the authors' model.
PRETRAINED_FORMATS = ("torchvision", "authors")


def create_model(model_config) -> nn.Module:
  """The model ``model_config`` (``config.model``) describes.

  Args:
    model_config: a ConfigDict (or anything with ``.get``) with the fields of
      ``configs/default.py``'s ``config.model``.

  Returns:
    an unbound `flax.linen.Module`; equal configs give the same instance in
    one process, so jitted functions of ``model.apply`` (a bound method,
    compared by its module's identity) are reused across runs
    (`canonical`).

  Raises:
    ValueError: for an unknown ``name`` (listing the valid ones) or dtype,
      ``num_classes`` None, or invalid similarity options of ``hcfcn``
      (`hcfcn.check_assign_options`).
  """
  name = model_config.name
  if model_config.num_classes is None:
    raise ValueError("num_classes is not set (training resolves it from the "
                     "dataset: config_validation.resolve).")
  dtype = resnet.get_dtype(model_config)
  encoder_kw = dict(num_classes=model_config.num_classes,
                    stage_blocks=tuple(model_config.stage_blocks),
                    width=model_config.width,
                    deformable=model_config.deformable, dtype=dtype)
  fcn_kw = dict(head_channels=model_config.head_channels,
                dropout=model_config.dropout,
                input_norm=model_config.input_norm, weight_init=model_config.weight_init,
                deform_bias=model_config.deform_bias)
  return canonical(_build(name, model_config, encoder_kw, fcn_kw, dtype))


def _build(name, model_config, encoder_kw, fcn_kw, dtype) -> nn.Module:
  if name == "hcfcn":
    assign_kw = dict(tau=model_config.tau,
                     similarity=model_config.similarity,
                     assign_init=model_config.assign_init,
                     parent_bias=model_config.parent_bias,
                     out_of_grid=model_config.out_of_grid)
    hcfcn.check_assign_options(**assign_kw)
    return hcfcn.HCFCN(**encoder_kw, **fcn_kw, **assign_kw,
                       sim_features=model_config.sim_features)
  if name == "fcn":
    return hcfcn.FCN(**encoder_kw, **fcn_kw)
  if name == "unet":
    return unet.UNet(**encoder_kw)
  if name == "fcn16s_vgg":
    return vgg.FCN16sVGG(num_classes=model_config.num_classes,
                         width=model_config.width, dtype=dtype)
  raise ValueError(f"unknown model.name {name!r}; valid names: "
                   f"{', '.join(MODEL_NAMES)}.")


@functools.lru_cache(maxsize=16)
def canonical(module: nn.Module) -> nn.Module:
  """The first of the modules equal to `module` (linen modules compare and
  hash by their fields) seen by this process, among the last 16."""
  return module


def param_count(tree) -> int:
  """Number of scalars in a pytree of arrays (or ShapeDtypeStructs)."""
  return sum(int(x.size) for x in jax.tree.leaves(tree))


def init_shapes(model_config, image_size: int = 256, batch_size: int = 1):
  """Variable shapes of the model, via `jax.eval_shape` (no compute)."""
  model = create_model(model_config)
  images = jax.ShapeDtypeStruct((batch_size, image_size, image_size, 3),
                                jnp.float32)
  return jax.eval_shape(
      lambda x: model.init({"params": jax.random.key(0)}, x, train=False),
      images)


def summary(model_config, image_size: int = 256, depth: int = 2) -> str:
  """Flax's parameter table of the model (what ``--mode=summary`` prints).

  Runs on shapes only (`nn.tabulate` uses `jax.eval_shape`), so even the
  full-size models are cheap.

  Args:
    model_config: ``config.model``.
    image_size: side of the (square) dummy input, a multiple of 16.
    depth: module nesting depth of the table rows.

  Returns:
    the table, followed by a line with the total parameter count.
  """
  model = create_model(model_config)
  images = jnp.zeros((1, image_size, image_size, 3), jnp.float32)
  table = nn.tabulate(
      model, {"params": jax.random.key(0), "dropout": jax.random.key(1)},
      depth=depth, console_kwargs={"width": 160, "force_terminal": False,
                                   "color_system": None})(images, train=False)
  shapes = init_shapes(model_config, image_size)
  params = param_count(shapes["params"])
  stats = param_count(shapes.get("batch_stats", {}))
  return (f"{table}\nmodel {model_config.name}: {params:,} parameters "
          f"({params * 4 / 2**20:.1f} MiB in float32), {stats:,} batch "
          f"statistics; input {image_size}x{image_size}.")
