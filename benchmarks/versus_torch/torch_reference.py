r"""PyTorch reference train step: the comparison point for train_step.py.

  python benchmarks/versus_torch/torch_reference.py  # batch 8, 256x256
  python benchmarks/versus_torch/torch_reference.py --quick  # a few seconds
  python benchmarks/versus_torch/run.py --what=torch --models=fcn,hcfcn0,hcfcn
  python benchmarks/versus_torch/run.py --what=torch --settings=authors,cl,fast
  python benchmarks/train_step.py --deformable=0  # the JAX side to compare with

The project's `hcfcn` (HCFCN-16) with ``deformable=False`` rebuilt in PyTorch
eager, float32, on the CPU: the truncated ResNet-34 encoder, the FCN head, the
1x1 similarity projections and the soft-superpixel upsampling 16 -> 8 -> 4
written with ``F.unfold`` / ``F.fold`` over 3x3 neighbourhoods of the coarse
grid (the way the paper's PyTorch code does), then bilinear to the input size.
Loss: cross-entropy (255 ignored) + lambda * `losses.slic_loss` (m = 0, as
train_step.py). Adam (lr 5e-4), train mode, one ``optimizer.step()`` per step.
Same parameter count as the JAX model with ``deformable=False``; same random
batch as train_step.py's ``make_batch``.

Settings (``--settings``, each timed for every ``--models`` entry): ``authors``
is the step as the paper's code runs (NCHW, the unfold/fold superpixel ops,
``torch.optim.Adam``'s CPU default: a Python loop over the parameters);
``fast`` is how a careful eager user writes it: ``channels_last`` model and
input (oneDNN convolutions and BN without layout reorders),
``Adam(fused=True)`` and the superpixel ops with unfold/fold kept but the
2x2 children contracted by einsum (``--sp_ops=einsum`` above); single
changes: ``fused``, ``cl``, ``einsum``, or joined by ``+``. Same network and
parameter count in all. On a shared machine run it with
``OMP_WAIT_POLICY=PASSIVE``: spinning OpenMP threads that wait for a
descheduled peer made every step up to 35x slower there.

Prints, per variant, the median step time over the timed steps and its
median process CPU time (images/s; the variants' steps are timed in turn,
`timing.py`) and the parameter count, then `overhead` = step time of the
regularized hcfcn / the unregularized one per setting. The last line is
one JSON object.
"""

import argparse
import json
import math
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # pylint: disable=g-import-not-at-top,g-bad-import-order
import timing  # benchmarks/timing.py: JAX-free, like this script.
import torch
import torch.nn.functional as F
from torch import nn

from coarseseg_jax import host  # JAX-free too.

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
XYZ_FROM_RGB = ((0.412453, 0.357580, 0.180423),
                (0.212671, 0.715160, 0.072169),
                (0.019334, 0.119193, 0.950227))
D65_WHITE = (0.95047, 1.0, 1.08883)


# --- Soft superpixel ops (coarseseg_jax/superpixels.py), NCHW. --------------
# Neighbour k of fine pixel (i, j) is the coarse cell (i//2 + k//3 - 1,
# j//2 + k%3 - 1): exactly F.unfold's (kh, kw) row-major order with a 3x3
# kernel and padding 1, so cells outside the grid read the zero padding.

def neighbours(x):
  """(B, C, h, w) -> (B, C, 9, 2h, 2w): the 9 cells around each fine pixel's
  parent (unfold, then nearest x2 so the 2x2 children share their parent's)."""
  b, c, h, w = x.shape
  nb = F.unfold(x, 3, padding=1).view(b, c * 9, h, w)
  return F.interpolate(nb, scale_factor=2, mode="nearest").view(
      b, c, 9, 2 * h, 2 * w)


def assign(fine, coarse, tau):
  """superpixels.assign (dot): softmax_k <fine[i, j], coarse[cell_k]> / tau.
  Out-of-grid candidates are masked to weight 0, as ours (the paper's code
  lets the zero padding take part)."""
  logits = (fine.unsqueeze(2) * neighbours(coarse)).sum(1) / tau  # (B,9,2h,2w)
  ones = coarse.new_ones((1, 1) + coarse.shape[2:])
  valid = neighbours(ones)[:, 0] > 0  # (1, 9, 2h, 2w)
  return torch.softmax(logits.masked_fill(~valid, -1e9), dim=1)


def upsample(x, a):
  """superpixels.upsample: y[i, j] = sum_k a[i, j, k] x[cell_k(i, j)]."""
  return (a.unsqueeze(1) * neighbours(x)).sum(2)


def pool(y, a):
  """Adjoint of `upsample` in x: each cell collects a[i, j, k] y[i, j] from the
  fine pixels that see it as neighbour k (children summed, then fold)."""
  b, c, hh, ww = y.shape
  h, w = hh // 2, ww // 2
  sent = a.unsqueeze(1) * y.unsqueeze(2)  # (B, C, 9, 2h, 2w)
  sent = sent.reshape(b, c * 9, h, 2, w, 2).sum((3, 5))  # per parent cell
  return F.fold(sent.reshape(b, c * 9, h * w), (h, w), 3, padding=1)


def downsample(x, a, eps=1e-8):
  """superpixels.downsample: assignment-weighted mean (mass as a channel)."""
  pooled = pool(torch.cat([x, x.new_ones(x[:, :1].shape)], 1), a)
  return pooled[:, :-1] / (pooled[:, -1:] + eps)


# The same ops with the 3x3 unfold / fold kept but the 2x2 children of each
# parent exposed by a reshape and contracted with einsum (batched matmuls), so
# the 4x nearest-upsampled (B, 9C, 2h, 2w) copy of every unfold, its product
# and their gradients are never materialised ("--sp_ops=einsum").

def _unfold9(x):
  """(B, C, h, w) -> (B, C, 9, h, w): the 9 cells around each cell."""
  b, c, h, w = x.shape
  return F.unfold(x, 3, padding=1).view(b, c, 9, h, w)


def _kids(x):
  """(B, C, 2h, 2w) -> (B, C, h, 2, w, 2)."""
  b, c, hh, ww = x.shape
  return x.reshape(b, c, hh // 2, 2, ww // 2, 2)


def assign_einsum(fine, coarse, tau):
  b, _, hh, ww = fine.shape
  logits = torch.einsum("bchpwq,bckhw->bkhpwq", _kids(fine),
                        _unfold9(coarse)).reshape(b, 9, hh, ww) / tau
  ones = coarse.new_ones((1, 1) + coarse.shape[2:])
  valid = neighbours(ones)[:, 0] > 0
  return torch.softmax(logits.masked_fill(~valid, -1e9), dim=1)


def upsample_einsum(x, a):
  b, c, h, w = x.shape
  return torch.einsum("bkhpwq,bckhw->bchpwq", _kids(a),
                      _unfold9(x)).reshape(b, c, 2 * h, 2 * w)


def downsample_einsum(x, a, eps=1e-8):
  xa = torch.cat([x, x.new_ones(x[:, :1].shape)], 1)
  b, c, hh, ww = xa.shape
  sent = torch.einsum("bkhpwq,bchpwq->bckhw", _kids(a), _kids(xa))
  pooled = F.fold(sent.reshape(b, c * 9, hh * ww // 4), (hh // 2, ww // 2), 3,
                  padding=1)
  return pooled[:, :-1] / (pooled[:, -1:] + eps)


SP_OPS = {"unfold": (assign, upsample, downsample),
          "einsum": (assign_einsum, upsample_einsum, downsample_einsum)}


def reconstruct(x, assignments, sp_ops="unfold"):
  _, up, down = SP_OPS[sp_ops]
  for a in assignments:
    x = down(x, a)
  for a in reversed(assignments):
    x = up(x, a)
  return x


# --- Loss (coarseseg_jax/losses.py, color.py). ------------------------------

def rgb_to_lab(rgb):
  """color.rgb_to_lab (skimage's rgb2lab, D65), (B, 3, H, W)."""
  lin = torch.where(rgb > 0.04045, ((rgb + 0.055) / 1.055) ** 2.4, rgb / 12.92)
  r, g, b = lin.unbind(1)
  fx, fy, fz = (
      torch.where(t > 0.008856, t.clamp_min(1e-12) ** (1 / 3),
                  7.787 * t + 16 / 116)
      for t in ((m[0] * r + m[1] * g + m[2] * b) / wp
                for m, wp in zip(XYZ_FROM_RGB, D65_WHITE)))
  return torch.stack([116 * fy - 16, 500 * (fx - fy), 200 * (fy - fz)], 1)


def slic_loss(image, assignments, sp_ops="unfold"):
  """losses.slic_loss with m = 0: block-mean RGB at the finest grid -> Lab
  (a constant), reconstructed through the assignments, mean L2 error."""
  s0 = image.shape[2] // assignments[0].shape[2]
  with torch.no_grad():
    lab = rgb_to_lab(F.avg_pool2d(image, s0))
  err = reconstruct(lab, assignments, sp_ops) - lab
  return torch.linalg.vector_norm(err, dim=1).mean()  # grad 0 at 0, as ours


# --- Model (coarseseg_jax/models/resnet.py, hcfcn.py), deformable=False. ----

def conv(cin, cout, k, stride=1, bias=False):
  return nn.Conv2d(cin, cout, k, stride, k // 2, bias=bias)


class BasicBlock(nn.Module):
  """Downsampling block: 3x3/2 conv1 and a 3x3/2 conv + BN shortcut (ours and
  the paper's; torchvision's shortcut is 1x1). Else the identity shortcut."""

  def __init__(self, cin, cout, down):
    super().__init__()
    self.conv1 = conv(cin, cout, 3, 2 if down else 1)
    self.bn1 = nn.BatchNorm2d(cout)
    self.conv2, self.bn2 = conv(cout, cout, 3), nn.BatchNorm2d(cout)
    self.downsample = nn.Identity()
    if down:
      self.downsample = nn.Sequential(conv(cin, cout, 3, 2),
                                      nn.BatchNorm2d(cout))

  def forward(self, x):
    y = F.relu(self.bn1(self.conv1(x)))
    return F.relu(self.bn2(self.conv2(y)) + self.downsample(x))


class HCFCN(nn.Module):
  """hcfcn.HCFCN (superpixels=True) or hcfcn.FCN (False); BN momentum 0.1,
  eps 1e-5 (PyTorch's defaults, which ours reproduce)."""

  def __init__(self, num_classes=6, stage_blocks=(3, 4, 6), width=64,
               head_channels=64, dropout=0.1, sim_features=48, tau=0.07,
               superpixels=True, sp_ops="unfold"):
    super().__init__()
    self.tau, self.superpixels, self.sp_ops = tau, superpixels, sp_ops
    self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
    self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))
    self.conv1, self.bn1 = conv(3, width, 7, 2), nn.BatchNorm2d(width)
    self.layers, cin = nn.ModuleList(), width
    for stage, n in enumerate(stage_blocks):
      cout = width * 2 ** stage
      self.layers.append(nn.ModuleList(
          BasicBlock(cin if i == 0 else cout, cout, stage > 0 and i == 0)
          for i in range(n)))
      cin = cout
    self.head = nn.Sequential(  # torchvision's FCNHead
        conv(4 * width, head_channels, 3), nn.BatchNorm2d(head_channels),
        nn.ReLU(), nn.Dropout(dropout),
        conv(head_channels, num_classes, 1, bias=True))
    if superpixels:  # 1x1, no bias, in float32: hcfcn.HCFCN._project
      self.proj = nn.ModuleDict({
          name: conv(cin, sim_features, 1) for name, cin in (
              ("fine8", 2 * width), ("coarse8", 4 * width),
              ("fine4", width), ("coarse4", 2 * width))})
    for mod in self.modules():  # Initialisers as ours (timing-neutral).
      if isinstance(mod, nn.Conv2d) and mod.kernel_size[0] > 1:
        # resnet.conv_init (He normal, fan_out).
        nn.init.kaiming_normal_(mod.weight, mode="fan_out", nonlinearity="relu")
      elif isinstance(mod, nn.Conv2d):  # Flax's default: lecun_normal
        std = 1 / math.sqrt(mod.in_channels) / 0.87962566103423978
        nn.init.trunc_normal_(mod.weight, std=std, a=-2 * std, b=2 * std)
        if mod.bias is not None:
          nn.init.zeros_(mod.bias)

  def encode(self, images):
    """(B, 3, H, W) in [0, 1] -> the encoder's features (resnet.py's keys)."""
    x = (images - self.mean) / self.std
    x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 3, 2, 1)
    feats = {}
    for stage, blocks in enumerate(self.layers, 1):
      for i, block in enumerate(blocks):
        x = block(x)
        if i == 0 and stage > 1:
          feats[f"layer{stage}_down"] = x
      feats[f"layer{stage}"] = x
    return feats

  def forward(self, images):
    """(B, 3, H, W) in [0, 1] -> (logits (B, classes, H, W), [A_4, A_8])."""
    feats = self.encode(images)
    logits, assignments = self.head(feats["layer3"]), []
    assign_op, up, _ = SP_OPS[self.sp_ops]
    if self.superpixels:
      # (stride s, fine features at s, coarse at 2s), coarsest first, as ours.
      for s, fine, coarse in ((8, "layer2", "layer3_down"),
                              (4, "layer1", "layer2_down")):
        a = assign_op(self.proj[f"fine{s}"](feats[fine]),
                   self.proj[f"coarse{s}"](feats[coarse]), self.tau)
        logits = up(logits, a)
        assignments.insert(0, a)
    return F.interpolate(logits, images.shape[2:], mode="bilinear",
                         align_corners=False), assignments


# --- Benchmark. --------------------------------------------------------------

def make_batch(batch_size, size, num_segments=512, seed=0):
  """train_step.py's make_batch (same draws), as NCHW torch tensors."""
  rng = np.random.default_rng(seed)
  rng.integers(0, num_segments, (batch_size, size // 16, size // 16))  # slic
  label = rng.integers(0, 6, (batch_size, size, size))
  label[:, :, : size // 8] = 255
  image = rng.random((batch_size, size, size, 3), np.float32)
  return (torch.from_numpy(image).permute(0, 3, 1, 2).contiguous(),
          torch.from_numpy(label).long())


# Settings of the PyTorch step: "authors" is the paper's code as users run it
# (eager, NCHW, unfold/fold superpixel ops, torch.optim.Adam's CPU default,
# the per-parameter for-loop); a setting is "authors" or changes to it joined
# by "+": fused (Adam(fused=True): one kernel for all parameters), cl
# (channels_last model and input), einsum (the superpixel ops above).
# "fast" = all three.
CHANGES = ("fused", "cl", "einsum")
ALIASES = {"authors": "", "fast": "+".join(CHANGES)}


def parse_setting(setting):
  changes = {c for c in ALIASES.get(setting, setting).split("+") if c}
  if changes - set(CHANGES):
    raise ValueError(f"unknown setting {setting!r}: use {sorted(ALIASES)} or "
                     f"changes from {CHANGES} joined by '+'.")
  return changes


def variant(key, lmbda):
  """A `--models` key -> (model name, lambda) for `prepare`."""
  return {"fcn": ("fcn", 0.0), "hcfcn0": ("hcfcn", 0.0),
          "hcfcn": ("hcfcn", lmbda)}[key]


def prepare(name, lmbda, setting, args):
  """A warmed-up step closure of one variant and its row (model, params)."""
  changes = parse_setting(setting)
  sp_ops = "einsum" if "einsum" in changes else "unfold"
  fmt = (torch.channels_last if "cl" in changes else torch.contiguous_format)
  torch.manual_seed(0)
  quick = dict(stage_blocks=(1, 1, 1), width=16) if args.quick else {}
  model = HCFCN(superpixels=name == "hcfcn", sp_ops=sp_ops, **quick).train()
  model = model.to(memory_format=fmt)
  opt = torch.optim.Adam(model.parameters(), lr=5e-4,
                         **({"fused": True} if "fused" in changes else {}))
  images, labels = make_batch(args.batch_size, args.size)
  images = images.contiguous(memory_format=fmt)

  def step():
    logits, assignments = model(images)
    loss = F.cross_entropy(logits, labels, ignore_index=255)
    if lmbda:
      loss = loss + lmbda * slic_loss(images, assignments, sp_ops)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return loss.item()

  for _ in range(args.warmup):
    step()
  return step, {"model": name, "lmbda": lmbda, "setting": setting,
                "params": sum(p.numel() for p in model.parameters())}


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--quick", action="store_true")
  parser.add_argument("--batch_size", type=int, default=8)
  parser.add_argument("--size", type=int, default=256)
  parser.add_argument("--steps", type=int, default=10)
  parser.add_argument("--warmup", type=int, default=2)
  parser.add_argument("--lmbda", type=float, default=0.05)
  parser.add_argument("--threads", type=int, default=os.cpu_count())
  parser.add_argument("--models", default="hcfcn0,hcfcn")
  parser.add_argument("--settings", default="authors,fast",
                      help="comma-separated: authors | fast | changes from "
                      f"{CHANGES} joined by '+' (see CHANGES)")
  args = parser.parse_args()
  if args.quick:
    args.size, args.steps, args.warmup = 64, 5, 1
  torch.set_num_threads(args.threads)
  settings = args.settings.split(",")
  for setting in settings:
    parse_setting(setting)
  steps = {f"{key}/{setting}": prepare(*variant(key, args.lmbda), setting, args)
           for setting in settings for key in args.models.split(",")}
  rows = timing.time_round_robin(steps, args.steps, args.batch_size)
  for key, r in rows.items():
    print(f"{key:24s} step {r['step_s']:.4f} s (cpu {r['cpu_s']:.3f} s)  "
          f"{r['images_per_s']:8.2f} img/s   {r['params']:,} params",
          flush=True)
  out = {"benchmark": "torch_reference", "torch": torch.__version__,
         "threads": torch.get_num_threads(),
         "machine": host.processor(),
         "cpus": os.cpu_count(), "batch_size": args.batch_size,
         "size": args.size, "dtype": "float32", "deformable": False,
         "quick": args.quick, "load_avg": os.getloadavg()[0],
         "results": rows, "overhead": {}}
  for setting in settings:
    reg, unreg = rows.get(f"hcfcn/{setting}"), rows.get(f"hcfcn0/{setting}")
    if reg and unreg:
      out["overhead"][setting] = round(reg["step_s"] / unreg["step_s"], 4)
      print(f"overhead of the regularizer ({setting}): "
            f"{100 * (out['overhead'][setting] - 1):+.1f} %")
  print(json.dumps(out))


if __name__ == "__main__":
  main()
