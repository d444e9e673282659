"""The authors' weights: a state dict of their PyTorch ``SegModel`` as Flax
variables of `hcfcn.HCFCN` / `hcfcn.FCN`.

The authors' code (github.com/JortdeJong13/superpixel-regularization,
``Functions/model_blocks.py``) builds HCFCN-16 as
``SegModel(ResNet34Encoder(), FCNHead(256, C), HCDecoder(tau, sim_feat))`` and
FCN-16 as ``SegModel(ResNet34Encoder(), FCNHead(256, C), interpolate)``; its
``torch.save(model.state_dict())`` files hold (for block i of a stage):

  ==========================================  ================================
  authors' key                                 Flax variable
  ==========================================  ================================
  encoder.conv1.weight, encoder.bn1.*          encoder/conv1, encoder/bn1
  encoder.layer_1.{i}.{conv1,bn1,conv2,bn2}    encoder/layer1_{i}/...
  encoder.layer_{s}_down.conv1.{weight,bias}   encoder/layer{s}_0/conv1 (DCN:
  encoder.layer_{s}_down.conv1                 kernel, bias, offset_conv)
    .conv_offset_mask.{weight,bias}
  encoder.layer_{s}_down.downsample.0.*        encoder/layer{s}_0/downsample_conv
  encoder.layer_{s}_down.downsample.1.*        encoder/layer{s}_0/downsample_bn
  encoder.layer_{s}_down.{bn1,conv2,bn2}       encoder/layer{s}_0/...
  encoder.layer_{s}.{i-1}.*                    encoder/layer{s}_{i} (i >= 1)
  classifier.0.weight, classifier.1.*          head/conv, head/bn
  classifier.4.{weight,bias}                   head/classifier
  decoder.weights.{x_4,s_8,x_8,s_16}.weight    proj_fine4, proj_coarse4,
                                               proj_fine8, proj_coarse8
  ==========================================  ================================

for s in 2, 3. Kernels ``(O, I, kh, kw)`` become ``(kh, kw, I, O)``; BN weight /
bias / running_mean / running_var become scale / bias and the batch
statistics mean / var. The DCN's ``conv_offset_mask`` output channels are
``(dy, dx)`` per tap, then the 9 mask logits: `deformable.DeformConv`'s
``offset_conv`` layout, so it is copied as it is. Nothing is rescaled.

The model must have the authors' layout: ``deformable=True``,
``deform_bias=True``, and for ``hcfcn`` the similarity projections without a
LayerNorm (``similarity`` dot or cosine). Widths and block counts are read
from the variables, so a smaller model with the same names converts too
(tests/make_authors_fixture.py builds one).
"""

from typing import Any, Dict, List, Tuple

import numpy as np
from flax import traverse_util
import flax.core

StateDict = Dict[str, np.ndarray]
Path = Tuple[str, ...]
PROJECTIONS = {"proj_fine4": "x_4", "proj_coarse4": "s_8",
               "proj_fine8": "x_8", "proj_coarse8": "s_16"}


def _kernel(w: np.ndarray) -> np.ndarray:
  return np.transpose(np.asarray(w, np.float32), (2, 3, 1, 0))


def _block_pairs(flat: Dict[Path, Any]) -> List[Tuple[Path, str]]:
  """(Flax block path, authors' block prefix) for every encoder block."""
  pairs = []
  for stage in (1, 2, 3):
    i = 0
    while ("params", "encoder", f"layer{stage}_{i}", "conv2",
           "kernel") in flat:
      path = ("encoder", f"layer{stage}_{i}")
      if stage == 1:
        pairs.append((path, f"encoder.layer_1.{i}"))
      elif i == 0:
        pairs.append((path, f"encoder.layer_{stage}_down"))
      else:
        pairs.append((path, f"encoder.layer_{stage}.{i - 1}"))
      i += 1
  return pairs


def mapping(variables: Any) -> Dict[Path, Tuple[str, str]]:
  """Flat Flax variable path -> (authors' key, conversion) for a model.

  Conversions: ``"kernel"`` (transpose a conv weight) or ``"copy"``.
  """
  flat = traverse_util.flatten_dict(flax.core.unfreeze(variables))
  out: Dict[Path, Tuple[str, str]] = {}

  def conv(path: Path, key: str):
    out[("params",) + path + ("kernel",)] = (f"{key}.weight", "kernel")
    if ("params",) + path + ("bias",) in flat:
      out[("params",) + path + ("bias",)] = (f"{key}.bias", "copy")
    if ("params",) + path + ("offset_conv", "kernel") in flat:
      conv(path + ("offset_conv",), f"{key}.conv_offset_mask")

  def bn(path: Path, key: str):
    out[("params",) + path + ("scale",)] = (f"{key}.weight", "copy")
    out[("params",) + path + ("bias",)] = (f"{key}.bias", "copy")
    out[("batch_stats",) + path + ("mean",)] = (f"{key}.running_mean", "copy")
    out[("batch_stats",) + path + ("var",)] = (f"{key}.running_var", "copy")

  conv(("encoder", "conv1"), "encoder.conv1")
  bn(("encoder", "bn1"), "encoder.bn1")
  for path, key in _block_pairs(flat):
    for n in (1, 2):
      conv(path + (f"conv{n}",), f"{key}.conv{n}")
      bn(path + (f"bn{n}",), f"{key}.bn{n}")
    if ("params",) + path + ("downsample_conv", "kernel") in flat:
      conv(path + ("downsample_conv",), f"{key}.downsample.0")
      bn(path + ("downsample_bn",), f"{key}.downsample.1")
  conv(("head", "conv"), "classifier.0")
  bn(("head", "bn"), "classifier.1")
  conv(("head", "classifier"), "classifier.4")
  for name, key in PROJECTIONS.items():
    if ("params", name, "kernel") in flat:
      conv((name,), f"decoder.weights.{key}")
  return out


def convert(state_dict: StateDict, variables: Any) -> Dict[str, Any]:
  """Fills a model's variables from an authors' state dict.

  Args:
    state_dict: key -> array (`pretrained.load_torchvision_state_dict` reads
      ``.pt`` / ``.pth`` / ``.npz``).
    variables: the model's variables (or their shapes, `jax.eval_shape` of
      ``model.init``): ``{'params', 'batch_stats'}``.

  Returns:
    ``{'params', 'batch_stats'}`` of float32 NumPy arrays.

  Raises:
    ValueError: one message naming the missing keys, the mis-shaped ones,
      the state dict's keys the model has no place for (with the option that
      would give it one) and the model's variables that no key fills.
  """
  flat = traverse_util.flatten_dict(flax.core.unfreeze(variables))
  plan = mapping(variables)
  new, missing, misshaped = {}, [], []
  for path, (key, how) in plan.items():
    if key not in state_dict:
      missing.append(key)
      continue
    value = (_kernel(state_dict[key]) if how == "kernel"
             else np.asarray(state_dict[key], np.float32))
    if value.shape != tuple(flat[path].shape):
      misshaped.append(f"{key} {tuple(np.shape(state_dict[key]))} -> model "
                       f"{'/'.join(path)} {tuple(flat[path].shape)}")
      continue
    new[path] = value
  used = {key for key, _ in plan.values()}
  unused = sorted(k for k in state_dict
                  if k not in used and not k.endswith("num_batches_tracked"))
  unfilled = sorted("/".join(p) for p in flat if p not in plan)
  problems = []
  if missing:
    problems.append(f"missing keys ({len(missing)}): {', '.join(missing[:8])}"
                    + (" ..." if len(missing) > 8 else ""))
  if misshaped:
    problems.append(f"mis-shaped keys ({len(misshaped)}): "
                    + "; ".join(misshaped[:4])
                    + (" ..." if len(misshaped) > 4 else ""))
  if unused:
    problems.append(f"keys the model has no place for ({len(unused)}): "
                    f"{', '.join(unused[:8])}" + (" ..." if len(unused) > 8
                                                  else "") + _hint(unused))
  if unfilled:
    problems.append(f"model variables no key fills ({len(unfilled)}): "
                    f"{', '.join(unfilled[:6])}"
                    + (" ..." if len(unfilled) > 6 else "")
                    + " (the authors' layout has no LayerNorm / learnable "
                    "tau / parent bias: use model.similarity=dot, "
                    "parent_bias unset)")
  if problems:
    raise ValueError("the state dict is not the authors' SegModel for this "
                     "model config: " + "; ".join(problems) + ".")
  return traverse_util.unflatten_dict(new)


def _hint(unused: List[str]) -> str:
  if any(k.startswith("decoder.") for k in unused):
    return " (an HCFCN-16 state dict: set model.name=hcfcn)"
  if any(k.endswith(".bias") and ("_down." in k) for k in unused):
    return " (set model.deform_bias=True and model.deformable=True)"
  if any("conv_offset_mask" in k for k in unused):
    return " (set model.deformable=True)"
  return " (set model.stage_blocks and model.width to the state dict's)"
