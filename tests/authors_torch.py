r"""An independent PyTorch port of the paper authors' model and loss.

Source read: github.com/JortdeJong13/superpixel-regularization,
``Functions/model_blocks.py``, ``Functions/loss_functions.py``,
``Functions/utils.py`` (the code of de Jong & Holenderski, "Semantic
segmentation with coarse annotations"). Rewritten from that reading, not
copied: the superpixel operations are written as 3x3 shifts of the coarse
grid instead of the authors' ``F.unfold`` / ``F.fold`` / flip-and-diagonal
index tricks, and ``torchvision.ops.deform_conv2d`` is replaced by a pure
torch gather (torchvision has no CPU deformable convolution here). The
numbers, the default initialisation and every state-dict key are the
authors'.

Not a test module (pytest collects ``test_*.py`` only): it is imported by
``tests/make_authors_fixture.py`` and ``benchmarks/authors_init.py``, and
needs ``torch``; the JAX tests read the fixtures it produces and never
import torch.

Two kinds of extra constructor parameters, with the authors' values as
defaults, so that small models keep the same key names:
``ResNet34Encoder(width=64, blocks=(3, 4, 6))``,
``HCDecoder(tau, sim_feat=64, width=64)`` and
``FCNHead(in_channels, nr_classes, dropout=0.1)``. The authors build
``SegModel(ResNet34Encoder(), FCNHead(256, C), HCDecoder(0.07, 48))``
(``train_eval.train_run``) and train with Adam, lr 5e-4, on [0, 1] images
(``T.ToTensor()``, no normalisation).

Quirks of the authors' code that this port keeps (a faithful reimplementation
must reproduce them):

* DCN: ``conv_offset_mask`` (a 3x3 conv with the block's stride, 27 output
  channels, zero-initialised) is chunked into (o1, o2, mask) = channels
  [0:9], [9:18], [18:27]; ``offset = cat(o1, o2)`` is therefore just
  channels [0:18], read by torchvision as *interleaved* pairs (channel 2k =
  dy, 2k+1 = dx of tap k = ki*3+kj), not as "all dy then all dx" as the
  names suggest. Mask = sigmoid(channels [18:27]) (0.5 at init). Main weight
  uniform(+-1/sqrt(cin*9)), bias 0 (not PyTorch's conv default).
* Only the first block of stages 2 and 3 is deformable: its ``conv1`` *and*
  its shortcut (``downsample.0``, a 3x3 stride-2 DCN with a bias, followed by
  ``downsample.1`` BatchNorm) are DCNs; stage 1 and the stem are plain.
  Identity blocks build ``conv1`` as ``Conv2d(out_c, out_c)`` (their
  ``in_c`` is ignored).
* Encoder to stride 16 only (no stage 4); the FCN head reads 4*width = 256
  channels; its dropout is 0.1 and the final 1x1 conv has a bias.
* Assignments: similarity = dot product of 1x1 projections (no bias, no
  normalisation), divided by tau = 0.07, softmax over the 9 candidate cells
  around the pixel's parent (candidate k = (dy+1)*3 + (dx+1), k = 4 the
  parent). Candidates outside the coarse grid are zero-padded: they take
  part in the softmax with similarity 0 (so they keep weight), and they
  contribute zero logits / zero features when upsampling. The model returns
  ``({4: A4, 8: A8}, logits)`` (A8 computed first).
* Regulariser: the image is resized bilinearly (``align_corners=False``, no
  antialiasing) to the finest assignment grid (H/4), converted to CIELAB with
  the authors' matrix and D65 white, XY appended as channel order
  (x = column, y = row) in pixels of that grid; pooled through A4 then A8
  (the ``downsample`` divides by the pooled weight + 1e-8) and decoded back
  through A8 then A4; the colour term is the mean over pixels of the L2 norm
  over the 3 Lab channels of the error, the position term the same over XY
  divided by (largest key)^2 = 64, times m. Loss = CE + lambda * that.
* ``F.cross_entropy(ignore_index=255)``: mean over the labelled pixels of
  the whole batch.
* The authors' ``rgb_to_cielab`` works in place on its argument (the resized
  copy, so the caller's image is unchanged); this port computes the same
  values out of place.
* BatchNorm is PyTorch's default (momentum 0.1, eps 1e-5, unbiased variance
  in the running update); ReLUs are in-place in the authors' code (no effect
  on values).
"""

import math

import torch
from torch import nn
import torch.nn.functional as F


# ---------------------------------------------------------------------------
# Deformable convolution (torchvision.ops.deform_conv2d semantics, pure torch)
# ---------------------------------------------------------------------------

def _pair(v):
  return tuple(v) if isinstance(v, (tuple, list)) else (v, v)


def deform_conv2d(x, weight, bias=None, offset=None, mask=None, stride=1,
                  padding=0):
  """Modulated deformable convolution, NCHW, like torchvision's.

  x: (B, Cin, H, W); weight: (Cout, Cin, kh, kw); bias: (Cout,) or None;
  offset: (B, 2*G*kh*kw, Ho, Wo), channel 2k = dy and 2k+1 = dx of tap
  k = ki*kw + kj (G offset groups, each over Cin/G input channels);
  mask: (B, G*kh*kw, Ho, Wo) or None. Tap k of output (i, j) samples the
  input at (i*sh - ph + ki + dy, j*sw - pw + kj + dx) with bilinear
  interpolation in which each of the 4 corners outside the image reads 0,
  and is multiplied by the mask. Dilation 1, one weight group.
  Differentiable (autograd) in x, weight, bias, offset and mask.
  """
  b, cin, h, w = x.shape
  cout, cin_w, kh, kw = weight.shape
  if cin_w != cin:
    raise ValueError(f"weight expects {cin_w} input channels, x has {cin}")
  sh, sw = _pair(stride)
  ph, pw = _pair(padding)
  ho = (h + 2 * ph - kh) // sh + 1
  wo = (w + 2 * pw - kw) // sw + 1
  taps = kh * kw
  if offset is None:
    offset = x.new_zeros(b, 2 * taps, ho, wo)
  groups = offset.shape[1] // (2 * taps)
  if offset.shape != (b, 2 * taps * groups, ho, wo):
    raise ValueError(f"offset shape {tuple(offset.shape)}, expected "
                     f"({b}, {2 * taps * groups}, {ho}, {wo})")
  if cin % groups:
    raise ValueError("input channels not divisible by offset groups")
  if mask is not None and mask.shape != (b, taps * groups, ho, wo):
    raise ValueError(f"mask shape {tuple(mask.shape)}, expected "
                     f"({b}, {taps * groups}, {ho}, {wo})")

  off = offset.reshape(b, groups, taps, 2, ho, wo)
  dy, dx = off[:, :, :, 0], off[:, :, :, 1]             # (B, G, K, Ho, Wo)
  dtype, dev = x.dtype, x.device
  ki = torch.arange(kh, device=dev, dtype=dtype).repeat_interleave(kw)
  kj = torch.arange(kw, device=dev, dtype=dtype).repeat(kh)
  oi = torch.arange(ho, device=dev, dtype=dtype) * sh - ph
  oj = torch.arange(wo, device=dev, dtype=dtype) * sw - pw
  base_y = ki[:, None, None] + oi[None, :, None]       # (K, Ho, 1)
  base_x = kj[:, None, None] + oj[None, None, :]       # (K, 1, Wo)
  py = base_y + dy                                     # (B, G, K, Ho, Wo)
  px = base_x + dx
  y0 = torch.floor(py)
  x0 = torch.floor(px)
  fy = py - y0                                         # carries d/d(offset)
  fx = px - x0
  y0 = y0.long()
  x0 = x0.long()

  cg = cin // groups
  n = taps * ho * wo
  flat = x.reshape(b, groups, cg, h * w)
  sampled = 0
  for cy, cx, wgt in ((y0, x0, (1 - fy) * (1 - fx)),
                      (y0, x0 + 1, (1 - fy) * fx),
                      (y0 + 1, x0, fy * (1 - fx)),
                      (y0 + 1, x0 + 1, fy * fx)):
    inside = (cy >= 0) & (cy < h) & (cx >= 0) & (cx < w)
    idx = (cy.clamp(0, h - 1) * w + cx.clamp(0, w - 1)).reshape(b, groups, 1, n)
    vals = torch.gather(flat, 3, idx.expand(b, groups, cg, n))
    wgt = torch.where(inside, wgt, torch.zeros_like(wgt))
    sampled = sampled + vals * wgt.reshape(b, groups, 1, n)
  if mask is not None:
    sampled = sampled * mask.reshape(b, groups, 1, n)
  cols = sampled.reshape(b, cin, taps, ho, wo)
  out = torch.einsum("bckij,ock->boij", cols, weight.reshape(cout, cin, taps))
  if bias is not None:
    out = out + bias.reshape(1, cout, 1, 1)
  return out


class DeformableConv2d(nn.Module):
  """The authors' modulated DCN (DCNv2) layer; keys weight, bias,
  conv_offset_mask.{weight,bias}."""

  def __init__(self, in_channels, out_channels, kernel_size=3, stride=1,
               padding=1):
    super().__init__()
    self.in_channels = in_channels
    self.out_channels = out_channels
    self.kernel_size = kernel_size
    self.stride = _pair(stride)
    self.padding = padding
    # Registration order = the authors' (weight, bias, then the offset conv),
    # and so is the order of the random draws: nn.Conv2d's own init runs
    # first, then the main weight's uniform, then the offset conv is zeroed.
    self.weight = nn.Parameter(
        torch.empty(out_channels, in_channels, kernel_size, kernel_size))
    self.bias = nn.Parameter(torch.empty(out_channels))
    self.conv_offset_mask = nn.Conv2d(
        in_channels, 3 * kernel_size * kernel_size, kernel_size=kernel_size,
        stride=stride, padding=padding, bias=True)
    bound = 1.0 / math.sqrt(in_channels * kernel_size * kernel_size)
    with torch.no_grad():
      self.weight.uniform_(-bound, bound)
      self.bias.zero_()
      self.conv_offset_mask.weight.zero_()
      self.conv_offset_mask.bias.zero_()

  def offset_and_mask(self, x):
    """(offset (B, 2*K, Ho, Wo) interleaved dy/dx, mask (B, K, Ho, Wo))."""
    raw = self.conv_offset_mask(x)
    taps = self.kernel_size * self.kernel_size
    return raw[:, :2 * taps], torch.sigmoid(raw[:, 2 * taps:])

  def forward(self, x):
    offset, mask = self.offset_and_mask(x)
    return deform_conv2d(x, self.weight, self.bias, offset, mask,
                         stride=self.stride, padding=self.padding)


# ---------------------------------------------------------------------------
# Encoder, head, decoders, model
# ---------------------------------------------------------------------------

class BasicBlock(nn.Module):
  """ResNet basic block; the downsampling variant uses DCNs for conv1 and
  for the shortcut (downsample = Sequential(DCN, BatchNorm2d))."""

  def __init__(self, in_c, out_c, downsample=False):
    super().__init__()
    if downsample:
      self.conv1 = DeformableConv2d(in_c, out_c, kernel_size=3, stride=2,
                                    padding=1)
      self.downsample = nn.Sequential(
          DeformableConv2d(in_c, out_c, kernel_size=3, stride=2, padding=1),
          nn.BatchNorm2d(out_c))
    else:
      # As the authors: out_c -> out_c whatever in_c is.
      self.conv1 = nn.Conv2d(out_c, out_c, 3, stride=1, padding=1, bias=False)
      self.downsample = nn.Identity()
    self.bn1 = nn.BatchNorm2d(out_c)
    self.relu = nn.ReLU()
    self.conv2 = nn.Conv2d(out_c, out_c, 3, stride=1, padding=1, bias=False)
    self.bn2 = nn.BatchNorm2d(out_c)

  def forward(self, x):
    shortcut = self.downsample(x)
    y = self.relu(self.bn1(self.conv1(x)))
    y = self.bn2(self.conv2(y))
    return self.relu(y + shortcut)


class ResNet34Encoder(nn.Module):
  """ResNet-34 truncated after stage 3 (stride 16).

  Returns (features, x) with features {'x': input, 'x_4': stage 1 output,
  's_8': stage 2's first (DCN) block, 'x_8': stage 2 output, 's_16': stage
  3's first block}, x = stage 3 output. ``width`` and ``blocks`` are this
  port's additions (authors: 64, (3, 4, 6)).
  """

  def __init__(self, input_channels=3, width=64, blocks=(3, 4, 6)):
    super().__init__()
    c1, c2, c3 = width, 2 * width, 4 * width
    self.conv1 = nn.Conv2d(input_channels, c1, kernel_size=7, stride=2,
                           padding=3, bias=False)
    self.bn1 = nn.BatchNorm2d(c1)
    self.relu = nn.ReLU()
    self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
    self.layer_1 = nn.Sequential(
        *[BasicBlock(c1, c1) for _ in range(blocks[0])])
    self.layer_2_down = BasicBlock(c1, c2, downsample=True)
    self.layer_2 = nn.Sequential(
        *[BasicBlock(c2, c2) for _ in range(blocks[1] - 1)])
    self.layer_3_down = BasicBlock(c2, c3, downsample=True)
    self.layer_3 = nn.Sequential(
        *[BasicBlock(c3, c3) for _ in range(blocks[2] - 1)])

  def forward(self, x):
    feats = {"x": x}
    y = self.maxpool(self.relu(self.bn1(self.conv1(x))))
    y = self.layer_1(y)
    feats["x_4"] = y
    y = self.layer_2_down(y)
    feats["s_8"] = y
    y = self.layer_2(y)
    feats["x_8"] = y
    y = self.layer_3_down(y)
    feats["s_16"] = y
    y = self.layer_3(y)
    return feats, y


class FCNHead(nn.Sequential):
  """Keys 0 (3x3 conv, no bias), 1 (BN), 2 (ReLU), 3 (Dropout), 4 (1x1 conv
  with bias)."""

  def __init__(self, in_channels, nr_classes, dropout=0.1):
    mid = in_channels // 4
    super().__init__(
        nn.Conv2d(in_channels, mid, 3, padding=1, bias=False),
        nn.BatchNorm2d(mid),
        nn.ReLU(),
        nn.Dropout(dropout),
        nn.Conv2d(mid, nr_classes, 1))


def interpolate(features, output):
  """The FCN decoder: bilinear (align_corners=False) to the input size."""
  size = features["x"].shape[-2:]
  return None, F.interpolate(output, size=size, mode="bilinear",
                             align_corners=False)


# The 9 candidate cells around a pixel's parent cell, k = (dy+1)*3 + (dx+1).
NEIGHBOURS = tuple((k // 3 - 1, k % 3 - 1) for k in range(9))


def _shifted(coarse, dy, dx):
  """coarse[..., i+dy, j+dx] at (i, j), zero where that falls outside."""
  h, w = coarse.shape[-2:]
  padded = F.pad(coarse, (1, 1, 1, 1))
  return padded[..., 1 + dy:1 + dy + h, 1 + dx:1 + dx + w]


def _to_children(coarse):
  """Each coarse cell's value repeated on its 2x2 children."""
  return coarse.repeat_interleave(2, dim=-2).repeat_interleave(2, dim=-1)


def _check_grids(fine, coarse):
  h, w = fine.shape[-2:]
  if h % 2 or w % 2 or coarse.shape[-2:] != (h // 2, w // 2):
    raise ValueError(f"fine grid {tuple(fine.shape[-2:])} is not twice the "
                     f"coarse grid {tuple(coarse.shape[-2:])}")


def upsample(output, assignment):
  """Decode a coarse map through soft assignments.

  output: (B, C, h, w) on the coarse grid; assignment: (B, 9, 2h, 2w).
  Pixel p = sum_k A[k, p] * output[parent(p) + d_k]; out-of-grid
  candidates contribute 0 (their weight is lost).
  """
  _check_grids(assignment, output)
  out = 0
  for k, (dy, dx) in enumerate(NEIGHBOURS):
    out = out + assignment[:, k:k + 1] * _to_children(_shifted(output, dy, dx))
  return out


eps = 1e-8


def downsample(features, assignment):
  """Pool a fine map onto the coarse grid through soft assignments.

  features: (B, C, H, W); assignment: (B, 9, H, W) -> (B, C, H/2, W/2):
  cell c = sum_p A[k, p] f_p / (sum_p A[k, p] + 1e-8) over the pixels p
  whose candidate k is c; pixel weight on out-of-grid candidates is dropped.
  """
  b, c, h, w = features.shape
  if h % 2 or w % 2 or assignment.shape[-2:] != (h, w):
    raise ValueError("features and assignment must share an even grid")

  def pool(v):  # sum of each cell's 2x2 children
    return v.reshape(*v.shape[:-2], h // 2, 2, w // 2, 2).sum(dim=(-3, -1))

  num = 0
  den = 0
  for k, (dy, dx) in enumerate(NEIGHBOURS):
    a = assignment[:, k:k + 1]
    # A pixel in cell q with candidate offset d belongs to cell q + d, so
    # cell c gathers from the pixels of cell c - d.
    num = num + _shifted(pool(a * features), -dy, -dx)
    den = den + _shifted(pool(a), -dy, -dx)
  return num / (den + eps)


class HCDecoder(nn.Module):
  """Soft-superpixel decoder 16 -> 8 -> 4, then bilinear to the input.

  ``weights`` keys x_4, s_8, x_8, s_16 (1x1 convs without bias onto
  ``sim_feat`` channels, reading width, 2*width, 2*width, 4*width channels;
  ``width`` is this port's addition, authors: 64).
  """

  def __init__(self, tau, sim_feat=64, width=64):
    super().__init__()
    self.tau = tau
    self.sim_feat = sim_feat
    self.strides = [4, 8]
    self.weights = nn.ModuleDict()
    for name, cin in (("x_4", width), ("s_8", 2 * width),
                      ("x_8", 2 * width), ("s_16", 4 * width)):
      self.weights[name] = nn.Conv2d(cin, sim_feat, kernel_size=1, bias=False)

  def similarities(self, s, feat, down_feat):
    """(B, 9, H, W) dot products of pixel and candidate-cell projections;
    0 for candidates outside the coarse grid."""
    q = self.weights[f"x_{s}"](feat)
    kv = self.weights[f"s_{2 * s}"](down_feat)
    _check_grids(q, kv)
    sims = [(q * _to_children(_shifted(kv, dy, dx))).sum(1)
            for dy, dx in NEIGHBOURS]
    return torch.stack(sims, dim=1)

  def cluster(self, s, feat, down_feat):
    """The soft assignment A^s: softmax over the 9 candidates of sim / tau."""
    return torch.softmax(self.similarities(s, feat, down_feat) / self.tau,
                         dim=1)

  def upsample(self, output, assignment):
    return upsample(output, assignment)

  def forward(self, features, output):
    assignments = {}
    for s in sorted(self.strides, reverse=True):  # 8 first, then 4
      a = self.cluster(s, features[f"x_{s}"], features[f"s_{2 * s}"])
      assignments[s] = a
      output = upsample(output, a)
    output = F.interpolate(output, size=features["x"].shape[-2:],
                           mode="bilinear", align_corners=False)
    return assignments, output


class SegModel(nn.Module):
  """encoder -> classifier (FCN head) -> decoder; returns (assignments,
  logits), assignments None for the FCN decoder ``interpolate``."""

  def __init__(self, encoder, classifier, decoder):
    super().__init__()
    self.encoder = encoder
    self.classifier = classifier
    self.decoder = decoder

  def __str__(self):
    return "HCFCN" if hasattr(self.decoder, "tau") else "FCN"

  def forward(self, x):
    features, deep = self.encoder(x)
    return self.decoder(features, self.classifier(deep))


# ---------------------------------------------------------------------------
# Colour / position features and losses
# ---------------------------------------------------------------------------

XYZ_FROM_RGB = ((0.412453, 0.357580, 0.180423),
                (0.212671, 0.715160, 0.072169),
                (0.019334, 0.119193, 0.950227))
D65_WHITE = (0.95047, 1.0, 1.08883)


def rgb_to_cielab(image):
  """(B, 3, H, W) sRGB in [0, 1] -> (B, 3, H, W) CIELAB (L, a, b).

  Same numbers as the authors' version, which overwrites its argument; this
  one does not.
  """
  lin = torch.where(image > 0.04045,
                    ((image.clamp_min(0.04045) + 0.055) / 1.055) ** 2.4,
                    image / 12.92)
  m = torch.tensor(XYZ_FROM_RGB, dtype=image.dtype, device=image.device)
  xyz = torch.einsum("oc,bchw->bohw", m, lin)
  white = torch.tensor(D65_WHITE, dtype=image.dtype, device=image.device)
  t = xyz / white.reshape(1, 3, 1, 1)
  f = torch.where(t > 0.008856, t.clamp_min(0.008856) ** (1.0 / 3.0),
                  7.787 * t + 16.0 / 116.0)
  fx, fy, fz = f[:, 0:1], f[:, 1:2], f[:, 2:3]
  return torch.cat([116.0 * fy - 16.0, 500.0 * (fx - fy), 200.0 * (fy - fz)],
                   dim=1)


def get_xy(b, h, w, dtype=torch.float32, device=None):
  """(b, 2, h, w) pixel coordinates: channel 0 = x (column), 1 = y (row)."""
  ys = torch.arange(h, dtype=dtype, device=device)
  xs = torch.arange(w, dtype=dtype, device=device)
  grid = torch.stack([xs[None, :].expand(h, w), ys[:, None].expand(h, w)])
  return grid[None].expand(b, 2, h, w).clone()


class CrossEntropy(nn.Module):

  def __init__(self, ignore_index=255):
    super().__init__()
    self.ignore_index = ignore_index

  def __str__(self):
    return "cross_entropy"

  def forward(self, assignments, output, image, label):
    return F.cross_entropy(output, label, ignore_index=self.ignore_index)


def slic_regulariser(assignments, image, m=0.0):
  """The authors' SLIC term (before lambda): colour + m * position / K^2."""
  keys = sorted(assignments)
  size = (int(image.shape[-2] / keys[0]), int(image.shape[-1] / keys[0]))
  small = F.interpolate(image, size=size, mode="bilinear", align_corners=False)
  target = torch.cat([
      rgb_to_cielab(small),
      get_xy(small.shape[0], size[0], size[1], small.dtype, small.device)],
                     dim=1)
  feats = target
  for k in keys:
    feats = downsample(feats, assignments[k])
  for k in reversed(keys):
    feats = upsample(feats, assignments[k])
  err = feats - target
  colour = torch.linalg.vector_norm(err[:, :-2], dim=1).mean()
  position = torch.linalg.vector_norm(err[:, -2:], dim=1).mean() / keys[-1]**2
  return colour + m * position


class RegularisedCrossEntropy(nn.Module):

  def __init__(self, lmbda=0.05, m=0, ignore_index=255):
    super().__init__()
    self.lmbda = lmbda
    self.m = m
    self.ignore_index = ignore_index

  def __str__(self):
    if self.lmbda == 0 and self.m == 0:
      return "cross_entropy"
    return f"reg_cross_entropy_{self.lmbda}_{self.m}"

  def regulariser(self, assignments, image):
    return slic_regulariser(assignments, image, self.m)

  def forward(self, assignments, output, image, label):
    ce = F.cross_entropy(output, label, ignore_index=self.ignore_index)
    return ce + self.lmbda * self.regulariser(assignments, image)


class SLIC(nn.Module):
  """The authors' regulariser alone (their ``SLIC`` loss class)."""

  def __init__(self, m=0):
    super().__init__()
    self.m = m

  def forward(self, assignments, output, image, label):
    return slic_regulariser(assignments, image, self.m)


def build_hcfcn(nr_classes, width=64, blocks=(3, 4, 6), tau=0.07,
                sim_feat=48, dropout=0.1):
  """The authors' HCFCN (train_run with hc=True) at the given size."""
  return SegModel(ResNet34Encoder(width=width, blocks=blocks),
                  FCNHead(4 * width, nr_classes, dropout=dropout),
                  HCDecoder(tau, sim_feat, width=width))


def build_fcn(nr_classes, width=64, blocks=(3, 4, 6), dropout=0.1):
  """The authors' FCN baseline (train_run with hc=False)."""
  return SegModel(ResNet34Encoder(width=width, blocks=blocks),
                  FCNHead(4 * width, nr_classes, dropout=dropout),
                  interpolate)


__all__ = [
    "deform_conv2d", "DeformableConv2d", "BasicBlock", "ResNet34Encoder",
    "FCNHead", "interpolate", "HCDecoder", "SegModel", "rgb_to_cielab",
    "get_xy", "downsample", "upsample", "CrossEntropy",
    "RegularisedCrossEntropy", "SLIC", "slic_regulariser", "build_hcfcn",
    "build_fcn", "NEIGHBOURS",
]
