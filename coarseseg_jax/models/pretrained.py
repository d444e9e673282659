r"""ImageNet initialisation from torchvision state dicts (nothing downloaded).

``config.model.pretrained`` names a file holding a torchvision ``resnet34``
(models ``hcfcn``, ``fcn``, ``unet``) or ``vgg16`` (``fcn16s_vgg``) state dict:

* ``.npz``: one array per state-dict key (no PyTorch needed). Make one with
  PyTorch once: ``python -m coarseseg_jax.models.pretrained resnet34.pth
  resnet34.npz``, or ``np.savez(path, **{k: v.numpy() for k, v in
  torchvision.models.resnet34(weights='DEFAULT').state_dict().items()})``.
* ``.pth`` / ``.pt``: read with ``torch.load`` when torch is installed.

Only the encoder is converted (ResNet-34's ``conv1``, ``bn1``, ``layer1``-
``layer3``; VGG-16's 13 convs, ``fc6`` and ``fc7`` from ``classifier.0/3``);
the heads, decoders, similarity projections and offset convs keep their
initialisation. Conversion details:

* conv kernels ``(O, I, kh, kw)`` -> ``(kh, kw, I, O)``; BN weight/bias ->
  scale/bias, running_mean/var -> ``batch_stats`` mean/var.
* torchvision's downsampling shortcut is a 1x1 stride-2 conv; the paper's is a
  3x3 stride-2 conv (padding 1): the 1x1 kernel is embedded at the centre of a
  zero 3x3 kernel, which computes exactly the same function.
* deformable convs (`deformable.DeformConv`) take the plain conv's kernel with
  zero offsets. Their zero-initialised mask is ``sigmoid(0) = 0.5``, so the
  kernel is stored multiplied by 2: the converted layer computes exactly the
  plain conv at initialisation, and stays free to learn offsets and the mask.
* ``stage_blocks`` must be (3, 4, 6) and ``width`` 64 to take a full resnet34:
  otherwise a ValueError says what does not fit. ``allow_partial=True``
  converts the blocks the model has (a prefix of each stage) and ignores the
  rest.

The converted encoder computes torchvision's ``resnet34`` features (eval-mode
BN) up to ``layer3``; ``tests/test_pretrained.py`` checks it to 1e-4.
"""

import os
import sys
from typing import Any, Dict, Mapping

import numpy as np
from flax import traverse_util
import flax.core

StateDict = Dict[str, np.ndarray]
# torchvision vgg16 `features` indices of the 13 convs, in order.
VGG16_CONV_INDICES = (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)
VGG16_CONV_NAMES = tuple(f"conv{s}_{i}" for s, n in
                         ((1, 2), (2, 2), (3, 3), (4, 3), (5, 3))
                         for i in range(1, n + 1))


def load_torchvision_state_dict(path: str) -> StateDict:
  """Reads a state dict from ``.npz`` (or ``.pth``/``.pt`` with torch).

  Args:
    path: the file. A ``module.`` prefix on every key (DataParallel) is
      dropped; a checkpoint dict holding ``'state_dict'`` or ``'model'`` is
      unwrapped.

  Returns:
    ``{key: float32 or int ndarray}``.

  Raises:
    FileNotFoundError, ValueError (unknown extension), ImportError (``.pth``
    without torch).
  """
  if not os.path.exists(path):
    raise FileNotFoundError(f"pretrained weights file {path!r} not found "
                            "(nothing is downloaded; see "
                            "models/pretrained.py).")
  ext = os.path.splitext(path)[1].lower()
  if ext == ".npz":
    with np.load(path, allow_pickle=False) as data:
      sd = {k: np.asarray(data[k]) for k in data.files}
  elif ext in (".pth", ".pt"):
    try:
      import torch  # pylint: disable=g-import-not-at-top
    except ImportError as e:
      raise ImportError(
          f"reading {path!r} needs PyTorch, which is not installed. Install it "
          "(pip install torch) or convert the file to .npz where torch is "
          "available: python -m coarseseg_jax.models.pretrained IN.pth "
          "OUT.npz") from e
    obj = torch.load(path, map_location="cpu", weights_only=True)
    for wrapper in ("state_dict", "model"):
      if isinstance(obj, Mapping) and wrapper in obj and isinstance(
          obj[wrapper], Mapping):
        obj = obj[wrapper]
    sd = {k: v.detach().cpu().numpy() for k, v in obj.items()
          if hasattr(v, "detach")}
  else:
    raise ValueError(f"pretrained weights must be .npz, .pth or .pt, got "
                     f"{path!r}.")
  if sd and all(k.startswith("module.") for k in sd):
    sd = {k[len("module."):]: v for k, v in sd.items()}
  return sd


def _conv(w: np.ndarray) -> np.ndarray:
  """torch ``(O, I, kh, kw)`` -> flax ``(kh, kw, I, O)``."""
  return np.transpose(np.asarray(w, np.float32), (2, 3, 1, 0))


def _embed_1x1(w: np.ndarray) -> np.ndarray:
  """torch 1x1 ``(O, I, 1, 1)`` -> flax 3x3 with the kernel at the centre."""
  k = _conv(w)
  if k.shape[:2] != (1, 1):
    return k  # Not 1x1: let the shape check report it.
  out = np.zeros((3, 3) + k.shape[2:], np.float32)
  out[1, 1] = k[0, 0]
  return out


class _Converter:
  """Fills flat flax variables from a state dict, collecting problems."""

  def __init__(self, state_dict: StateDict, variables: Any):
    self.sd = state_dict
    variables = flax.core.unfreeze(variables)
    self.flat = {k: v for k, v in traverse_util.flatten_dict(variables).items()}
    self.missing, self.misshaped, self.used = [], [], set()

  def has(self, path) -> bool:
    return tuple(path) in self.flat

  def set(self, path, key, fn=lambda w: np.asarray(w, np.float32)):
    path = tuple(path)
    if key not in self.sd:
      self.missing.append(key)
      return
    self.used.add(key)
    value = fn(self.sd[key])
    target = tuple(self.flat[path].shape)
    if value.shape != target:
      self.misshaped.append(f"{key}: state dict {tuple(self.sd[key].shape)} -> "
                            f"{value.shape}, model {'/'.join(path)} {target}")
      return
    self.flat[path] = value

  def conv(self, path, key, deform_scale=True, embed=False):
    """A conv kernel; under a DeformConv, x2 (see the module docstring)."""
    path = tuple(path)
    is_deform = self.has(path + ("offset_conv", "kernel"))
    scale = 2.0 if (is_deform and deform_scale) else 1.0
    fn = _embed_1x1 if embed else _conv
    self.set(path + ("kernel",), key, lambda w: fn(w) * scale)
    if is_deform:
      for leaf in ("kernel", "bias"):
        p = path + ("offset_conv", leaf)
        self.flat[p] = np.zeros(self.flat[p].shape, np.float32)

  def bn(self, params_path, stats_path, key):
    self.set(params_path + ("scale",), f"{key}.weight")
    self.set(params_path + ("bias",), f"{key}.bias")
    self.set(stats_path + ("mean",), f"{key}.running_mean")
    self.set(stats_path + ("var",), f"{key}.running_var")

  def finish(self, what: str):
    if self.missing or self.misshaped:
      lines = [f"cannot convert the state dict into {what}:"]
      if self.missing:
        lines.append(f"  missing keys ({len(self.missing)}): "
                     + ", ".join(self.missing))
      if self.misshaped:
        lines.append(f"  mis-shaped keys ({len(self.misshaped)}):")
        lines += [f"    {m}" for m in self.misshaped]
      raise ValueError("\n".join(lines))
    return traverse_util.unflatten_dict(self.flat)


def convert_resnet34(state_dict: StateDict, variables: Any,
                     allow_partial: bool = False) -> Dict[str, Any]:
  """Loads torchvision ``resnet34`` weights into a model's ``encoder``.

  Args:
    state_dict: torchvision key -> array (`load_torchvision_state_dict`).
    variables: the model's variables (``{'params', 'batch_stats'}``, from
      ``model.init``) with a ``params['encoder']`` (`resnet.ResNetEncoder`).
    allow_partial: when the model has fewer blocks than the state dict
      (``stage_blocks`` < (3, 4, 6)), convert the first blocks of each stage
      instead of raising.

  Returns:
    a new variables dict (numpy arrays), the encoder replaced.

  Raises:
    ValueError: listing missing keys, mis-shaped keys and the state dict's
      layer1-3 blocks the model lacks.
  """
  conv_ = _Converter(state_dict, variables)
  if not conv_.has(("params", "encoder", "conv1", "kernel")):
    raise ValueError("the variables have no ResNet encoder "
                     "(params/encoder/conv1/kernel).")
  p, s = ("params", "encoder"), ("batch_stats", "encoder")
  conv_.conv(p + ("conv1",), "conv1.weight")
  conv_.bn(p + ("bn1",), s + ("bn1",), "bn1")
  for stage in (1, 2, 3):
    i = 0
    while conv_.has(p + (f"layer{stage}_{i}", "conv2", "kernel")):
      blk, tv = (f"layer{stage}_{i}",), f"layer{stage}.{i}"
      for n in (1, 2):
        conv_.conv(p + blk + (f"conv{n}",), f"{tv}.conv{n}.weight")
        conv_.bn(p + blk + (f"bn{n}",), s + blk + (f"bn{n}",), f"{tv}.bn{n}")
      if conv_.has(p + blk + ("downsample_conv", "kernel")):
        conv_.conv(p + blk + ("downsample_conv",), f"{tv}.downsample.0.weight",
                   embed=True)
        conv_.bn(p + blk + ("downsample_bn",), s + blk + ("downsample_bn",),
                 f"{tv}.downsample.1")
      i += 1
  unused = sorted({k.rsplit(".", 2)[0] for k in state_dict
                   if k.startswith(("layer1.", "layer2.", "layer3."))
                   and not k.endswith("num_batches_tracked")
                   and k not in conv_.used})
  if unused and not allow_partial:
    conv_.missing.append(
        f"(the model lacks state-dict modules {', '.join(unused)}: set "
        "model.stage_blocks = (3, 4, 6), or pass allow_partial=True to convert "
        "the first blocks of each stage only)")
  return conv_.finish("the ResNet encoder")


def convert_vgg16(state_dict: StateDict, variables: Any) -> Dict[str, Any]:
  """Loads torchvision ``vgg16`` weights into `vgg.FCN16sVGG` variables.

  The 13 convs come from ``features.{0,2,...,28}``; ``fc6`` from
  ``classifier.0`` (reshaped to a 7x7 conv), ``fc7`` from ``classifier.3``
  (a 1x1 conv). ``classifier.6`` (the ImageNet classes) is not used.

  Returns:
    a new variables dict (numpy arrays). Raises ValueError listing missing or
    mis-shaped keys.
  """
  conv_ = _Converter(state_dict, variables)
  if not conv_.has(("params", "conv1_1", "kernel")):
    raise ValueError("the variables have no VGG trunk (params/conv1_1).")
  for name, idx in zip(VGG16_CONV_NAMES, VGG16_CONV_INDICES):
    conv_.conv(("params", name), f"features.{idx}.weight")
    conv_.set(("params", name, "bias"), f"features.{idx}.bias")

  def fc(w, k):
    w = np.asarray(w, np.float32)
    cin = w.shape[1] // (k * k) if w.ndim == 2 else -1
    return _conv(w.reshape(w.shape[0], cin, k, k)) if cin > 0 else w

  for name, idx, k in (("fc6", 0, 7), ("fc7", 3, 1)):
    conv_.set(("params", name, "kernel"), f"classifier.{idx}.weight",
              lambda w, k=k: fc(w, k))
    conv_.set(("params", name, "bias"), f"classifier.{idx}.bias")
  return conv_.finish("the VGG-16 trunk")


def from_authors(path: str, model_config) -> Dict[str, Any]:
  """Flax variables (``params``, ``batch_stats``) from the authors' weights.

  Args:
    path: a state dict saved from the authors' ``SegModel`` (``.pt`` /
      ``.pth`` with torch installed, or ``.npz``; see
      `load_torchvision_state_dict`).
    model_config: ``config.model`` (``hcfcn`` or ``fcn``, ``deformable`` and
      ``deform_bias`` True: `configs/default.py`'s ``authors_code``).

  Returns:
    the whole model's variables as float32 NumPy arrays (`authors.convert`).

  Raises:
    FileNotFoundError, ImportError (``.pt`` without torch), ValueError (one
    message naming what does not fit).
  """
  from coarseseg_jax import models  # pylint: disable=g-import-not-at-top
  from coarseseg_jax.models import authors  # pylint: disable=g-import-not-at-top
  if model_config.name not in ("hcfcn", "fcn"):
    raise ValueError(f"the authors' weights are an hcfcn or fcn model, not "
                     f"model.name={model_config.name!r}.")
  shapes = models.init_shapes(model_config, image_size=64)
  return authors.convert(load_torchvision_state_dict(path), shapes)


def load_pretrained(path: str, model_config, variables: Any,
                    allow_partial: bool = False) -> Dict[str, Any]:
  """Reads ``path`` and converts it for ``model_config`` (train.py's hook).

  ``model_config.pretrained_format = "authors"``: the whole model from the
  authors' ``SegModel`` state dict (`from_authors`). Otherwise ``fcn16s_vgg``
  takes a torchvision ``vgg16`` state dict and the other models a
  ``resnet34`` one (the encoder only). Returns the new variables (numpy
  arrays).
  """
  if model_config.pretrained_format == "authors":
    loaded = from_authors(path, model_config)
    return {**variables, **loaded}
  state_dict = load_torchvision_state_dict(path)
  if model_config.name == "fcn16s_vgg":
    return convert_vgg16(state_dict, variables)
  return convert_resnet34(state_dict, variables, allow_partial=allow_partial)


def main(argv):
  """``python -m coarseseg_jax.models.pretrained IN.pth OUT.npz`` (torch)."""
  if len(argv) != 3:
    print(main.__doc__)
    return 2
  sd = load_torchvision_state_dict(argv[1])
  np.savez(argv[2], **sd)
  print(f"wrote {len(sd)} arrays to {argv[2]}")
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv))
