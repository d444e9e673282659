r"""Regenerates the PyTorch fixtures of the paper authors' model and loss.

  .venv/bin/python tests/make_authors_fixture.py
  .venv/bin/python tests/make_authors_fixture.py \
      --authors_repo=/path/to/superpixel-regularization   # + a cross-check

Deterministic (fixed seeds, one torch thread, zip entries with a fixed
timestamp): running it again rewrites every file below with the same bytes.
Needs torch (``pip install torch==2.13.0``) and scikit-image; the JAX tests
only read the files it writes. The model and loss are `authors_torch.py`, an
independent port of github.com/JortdeJong13/superpixel-regularization
(``Functions/model_blocks.py``, ``loss_functions.py``, ``utils.py``).

Every reference is computed in torch float64 from the float32 values stored
next to it (the model is cast to double after its float32 weights are
drawn, the images are stored float32 and cast), so a float32 computation of
the same inputs can be compared with it directly. Arrays are stored float32,
the scalar losses float64.

Writes:

* ``fixtures/authors_dcn.npz``: one modulated deformable conv (torchvision
  ``deform_conv2d`` semantics): ``x`` (2, 5, 9, 11), ``weight`` (6, 5, 3, 3),
  ``bias`` (6,), ``offset`` (2, 18, 5, 6) in about [-2.5, 2.5] (fractional
  parts kept at least 1e-3 away from integers; some taps sample outside the
  image), ``mask`` (2, 9, 5, 6) in (0, 1), ``stride`` 2, ``padding`` 1,
  ``out`` and ``g`` (2, 6, 5, 6) and the gradients of sum(out * g):
  ``grad_x``, ``grad_weight``, ``grad_bias``, ``grad_offset``, ``grad_mask``.
  Before writing, the port's ``deform_conv2d`` is asserted equal (float64)
  to a per-sample Python loop on a tiny case (values and all gradients) and
  to ``F.conv2d`` with zero offsets and mask 1.
* ``fixtures/authors_parity.npz``: a small HCFCN (``meta_width`` 8,
  ``meta_blocks`` (2, 2, 2), ``meta_num_classes`` 4, ``meta_sim_feat`` 8,
  ``meta_tau`` 0.07, loss ``meta_lmbda`` 0.5, ``meta_m`` 0.5): ``sd/<key>``
  for every state-dict entry but num_batches_tracked (the authors' init,
  then: offset/mask convs N(0, 0.05^2) weights and N(0, 0.5^2) biases, DCN
  biases, BN weight / bias / running_mean random, running_var in
  [0.5, 2]); ``images`` (2, 3, 64, 64) in [0, 1] (astronaut, coffee) and
  ``labels`` (2, 64, 64) (4 classes from the images' 8x8-block luminance,
  255 on ~30 % of the pixels, a band around the label borders);
  ``eval/{logits,a4,a8}`` (``model.eval()``); in train mode with the head's
  **dropout off** (p = 0, so deterministic; BN uses batch statistics):
  ``train/{logits,a4,a8}``, ``train/ce``, ``train/slic`` (the regulariser
  before lambda, the m-weighted position term included), its two parts
  ``train/slic_colour`` and ``train/slic_position`` (already divided by
  8^2, before m: slic = colour + m * position), ``train/loss`` =
  ce + lmbda * slic, ``grad/<key>`` (gradient of train/loss for every
  parameter) and ``train_stats/<key>`` (every BN running_mean / running_var
  after that one forward: momentum 0.1, unbiased variance). The DCN biases
  (``*_down.conv1.bias``, ``*_down.downsample.0.bias``) feed a BN in train
  mode, so their true gradient is 0 and ``grad/`` holds rounding noise
  (~1e-15). FCN variant, same encoder and head weights and running stats
  (``SegModel(encoder, head, interpolate)``): ``fcn/eval/logits``,
  ``fcn/train/loss`` (plain cross-entropy, dropout off) and ``fcn/grad/<key>``.
* ``fixtures/authors_keys.json``: the full-size authors' model
  ``SegModel(ResNet34Encoder(), FCNHead(256, 8), HCDecoder(0.07, 48))``:
  every state-dict key -> shape (num_batches_tracked included), in the
  state-dict order, and its parameter count.
"""

import argparse
import io
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
import types
import zipfile

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import authors_torch as port  # pylint: disable=wrong-import-position

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURES = os.path.join(HERE, "fixtures")

WIDTH, BLOCKS, NUM_CLASSES, SIM_FEAT = 8, (2, 2, 2), 4, 8
TAU, LMBDA, M = 0.07, 0.5, 0.5
IMAGE_SIZE = 64


def write_npz(path, arrays):
  """np.savez_compressed, but with fixed zip timestamps (same bytes twice)."""
  with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
    for name in sorted(arrays):
      buf = io.BytesIO()
      np.lib.format.write_array(buf, np.asarray(arrays[name]),
                                allow_pickle=False)
      info = zipfile.ZipInfo(name + ".npy", date_time=(1980, 1, 1, 0, 0, 0))
      info.compress_type = zipfile.ZIP_DEFLATED
      info.external_attr = 0o644 << 16
      zf.writestr(info, buf.getvalue())


def f32(t):
  return t.detach().to(torch.float32).cpu().numpy()


# ---------------------------------------------------------------------------
# Deformable convolution
# ---------------------------------------------------------------------------

def _loop_bilinear(img, y, x):
  """torchvision's bilinear_interpolate for one (H, W) plane, scalar ops."""
  h, w = img.shape
  if y <= -1 or y >= h or x <= -1 or x >= w:
    return img.new_zeros(())
  y0, x0 = math.floor(float(y.detach())), math.floor(float(x.detach()))
  ly, lx = y - y0, x - x0
  val = img.new_zeros(())
  for yy, xx, wt in ((y0, x0, (1 - ly) * (1 - lx)), (y0, x0 + 1, (1 - ly) * lx),
                     (y0 + 1, x0, ly * (1 - lx)), (y0 + 1, x0 + 1, ly * lx)):
    if 0 <= yy < h and 0 <= xx < w:
      val = val + wt * img[yy, xx]
  return val


def loop_deform_conv2d(x, weight, bias, offset, mask, stride, padding):
  """Slow, obviously correct reference: one Python loop per output tap."""
  b, cin, h, w = x.shape
  cout, _, kh, kw = weight.shape
  ho, wo = offset.shape[-2:]
  out = [[[[None] * wo for _ in range(ho)] for _ in range(cout)]
         for _ in range(b)]
  for n in range(b):
    for i in range(ho):
      for j in range(wo):
        cols = []
        for c in range(cin):
          for ki in range(kh):
            for kj in range(kw):
              k = ki * kw + kj
              y = i * stride - padding + ki + offset[n, 2 * k, i, j]
              xx = j * stride - padding + kj + offset[n, 2 * k + 1, i, j]
              cols.append(_loop_bilinear(x[n, c], y, xx) * mask[n, k, i, j])
        col = torch.stack(cols)
        for o in range(cout):
          out[n][o][i][j] = (weight[o].reshape(-1) * col).sum() + bias[o]
  return torch.stack([torch.stack([torch.stack([torch.stack(r) for r in ch])
                                   for ch in img]) for img in out])


def _grads(fn, inputs, g):
  inputs = [t.detach().clone().requires_grad_(True) for t in inputs]
  out = fn(*inputs)
  (out * g).sum().backward()
  return out.detach(), [t.grad for t in inputs]


def check_deform_conv():
  """Asserts the port's deform_conv2d against the loop and F.conv2d."""
  gen = torch.Generator().manual_seed(123)
  dt = torch.float64
  x = torch.randn(1, 2, 4, 5, generator=gen, dtype=dt)
  wt = torch.randn(2, 2, 3, 3, generator=gen, dtype=dt)
  bias = torch.randn(2, generator=gen, dtype=dt)
  off = (torch.rand(1, 18, 2, 3, generator=gen, dtype=dt) - 0.5) * 5
  mask = torch.rand(1, 9, 2, 3, generator=gen, dtype=dt)
  g = torch.randn(1, 2, 2, 3, generator=gen, dtype=dt)
  args = (x, wt, bias, off, mask)
  out_p, gr_p = _grads(
      lambda *a: port.deform_conv2d(*a, stride=2, padding=1), args, g)
  out_l, gr_l = _grads(
      lambda *a: loop_deform_conv2d(*a, stride=2, padding=1), args, g)
  diffs = [(out_p - out_l).abs().max().item()]
  diffs += [(a - b).abs().max().item() for a, b in zip(gr_p, gr_l)]
  print(f"deform_conv2d vs the per-sample loop (float64, tiny case): max diff "
        f"out {diffs[0]:.2e}, grads (x, weight, bias, offset, mask) "
        + ", ".join(f"{d:.2e}" for d in diffs[1:]))
  assert max(diffs) < 1e-12, diffs

  # Zero offsets, mask 1 (and no mask): a plain convolution.
  x = torch.randn(2, 5, 9, 11, generator=gen, dtype=dt)
  wt = torch.randn(6, 5, 3, 3, generator=gen, dtype=dt)
  bias = torch.randn(6, generator=gen, dtype=dt)
  for stride, padding in ((1, 1), (2, 1), (2, 0)):
    ref = F.conv2d(x, wt, bias, stride=stride, padding=padding)
    zero = torch.zeros(2, 18, *ref.shape[-2:], dtype=dt)
    ones = torch.ones(2, 9, *ref.shape[-2:], dtype=dt)
    d1 = (port.deform_conv2d(x, wt, bias, zero, ones, stride, padding)
          - ref).abs().max().item()
    d2 = (port.deform_conv2d(x, wt, bias, zero, None, stride, padding)
          - ref).abs().max().item()
    assert max(d1, d2) < 1e-12, (stride, padding, d1, d2)
  print("deform_conv2d with zero offsets and mask 1 == F.conv2d: ok")


def make_dcn_fixture():
  gen = torch.Generator().manual_seed(2024)
  x = torch.rand(2, 5, 9, 11, generator=gen) * 2 - 1
  weight = torch.randn(6, 5, 3, 3, generator=gen) * 0.3
  bias = torch.randn(6, generator=gen) * 0.5
  offset = (torch.rand(2, 18, 5, 6, generator=gen) * 2 - 1) * 2.5
  # Keep sample positions off the integer grid, where the offset gradient of
  # bilinear sampling jumps (floor); float32 rounding must not cross it.
  frac = offset - torch.floor(offset)
  offset = torch.where(frac < 1e-3, offset + 2e-3, offset)
  offset = torch.where(frac > 1 - 1e-3, offset - 2e-3, offset)
  mask = torch.rand(2, 9, 5, 6, generator=gen) * 0.9 + 0.05
  g = torch.randn(2, 6, 5, 6, generator=gen)
  stride, padding = 2, 1

  # How many taps sample (partly) outside the image.
  b, _, ho, wo = offset.shape
  ki = torch.arange(3).repeat_interleave(3).reshape(1, 9, 1, 1)
  kj = torch.arange(3).repeat(3).reshape(1, 9, 1, 1)
  py = ki + (torch.arange(ho) * stride - padding).reshape(1, 1, ho, 1) + offset[:, 0::2]
  px = kj + (torch.arange(wo) * stride - padding).reshape(1, 1, 1, wo) + offset[:, 1::2]
  outside = ((py < 0) | (py > 8) | (px < 0) | (px > 10)).double().mean().item()
  gone = ((py <= -1) | (py >= 9) | (px <= -1) | (px >= 11)).double().mean().item()

  inputs = [t.double() for t in (x, weight, bias, offset, mask)]
  out, grads = _grads(
      lambda *a: port.deform_conv2d(*a, stride=stride, padding=padding),
      inputs, g.double())
  arrays = dict(x=f32(x), weight=f32(weight), bias=f32(bias),
                offset=f32(offset), mask=f32(mask), g=f32(g),
                stride=np.array(stride), padding=np.array(padding),
                out=f32(out))
  for name, gr in zip(("x", "weight", "bias", "offset", "mask"), grads):
    arrays[f"grad_{name}"] = f32(gr)
  print(f"DCN fixture: {outside:.1%} of the taps have a corner outside the "
        f"image, {gone:.1%} read all zeros")
  return arrays


# ---------------------------------------------------------------------------
# Images, labels, model
# ---------------------------------------------------------------------------

def load_photo(name, size):
  import skimage.data  # pylint: disable=g-import-not-at-top
  import skimage.transform  # pylint: disable=g-import-not-at-top
  img = getattr(skimage.data, name)()[..., :3]
  h, w = img.shape[:2]
  s = min(h, w)
  top, left = (h - s) // 2, (w - s) // 2
  img = img[top:top + s, left:left + s]  # centre square crop
  img = skimage.transform.resize(img, (size, size), order=1,
                                 anti_aliasing=True)
  return np.clip(img, 0.0, 1.0).astype(np.float32).transpose(2, 0, 1)


def make_labels(image, num_classes=NUM_CLASSES, block=8, target=0.30):
  """Blocky label map from 8x8-block luminance quantiles, 255 near borders."""
  import scipy.ndimage  # pylint: disable=g-import-not-at-top
  lum = (0.299 * image[0] + 0.587 * image[1] + 0.114 * image[2]).astype(
      np.float64)
  h, w = lum.shape
  blocks = lum.reshape(h // block, block, w // block, block).mean((1, 3))
  edges = np.quantile(blocks, np.linspace(0, 1, num_classes + 1)[1:-1])
  cls = np.digitize(blocks, edges).astype(np.int64)
  label = np.repeat(np.repeat(cls, block, 0), block, 1)
  border = np.zeros((h, w), bool)
  border[:, 1:] |= label[:, 1:] != label[:, :-1]
  border[:, :-1] |= label[:, 1:] != label[:, :-1]
  border[1:] |= label[1:] != label[:-1]
  border[:-1] |= label[1:] != label[:-1]
  best = None
  for it in range(0, 8):
    band = (scipy.ndimage.binary_dilation(border, iterations=it)
            if it else border)
    if best is None or abs(band.mean() - target) < abs(best.mean() - target):
      best = band
  label = label.copy()
  label[best] = 255
  return label


def perturb(model, seed=7):
  """Non-trivial weights from the authors' init (see the module docstring)."""
  gen = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for name, t in model.state_dict().items():
      if not t.dtype.is_floating_point:
        continue
      if name.endswith("conv_offset_mask.weight"):
        t.normal_(0.0, 0.05, generator=gen)
      elif name.endswith("conv_offset_mask.bias"):
        t.normal_(0.0, 0.5, generator=gen)
      elif name.endswith("running_var"):
        t.uniform_(0.5, 2.0, generator=gen)
      elif name.endswith("running_mean"):
        t.normal_(0.0, 0.2, generator=gen)
      elif t.dim() == 1 and name.endswith("weight"):  # BN scale
        t.uniform_(0.5, 1.5, generator=gen)
      elif t.dim() == 1 and name.endswith("bias"):  # BN shift, DCN and head bias
        t.normal_(0.0, 0.2, generator=gen)


def dcn_layers(model):
  return [(n, m) for n, m in model.named_modules()
          if isinstance(m, port.DeformableConv2d)]


def describe_dcn_inputs(model, images):
  """Offset / mask ranges of every DCN in an eval forward."""
  stats = {}
  hooks = []
  for name, layer in dcn_layers(model):
    def hook(mod, inp, _, name=name):
      off, mask = mod.offset_and_mask(inp[0])
      stats[name] = (off.abs().mean().item(), off.abs().max().item(),
                     mask.min().item(), mask.max().item())
    hooks.append(layer.register_forward_hook(hook))
  with torch.no_grad():
    model(images)
  for h in hooks:
    h.remove()
  for name, (mean, mx, lo, hi) in stats.items():
    print(f"  {name}: |offset| mean {mean:.2f} max {mx:.2f} px, "
          f"mask in [{lo:.2f}, {hi:.2f}]")


def entropy(a):
  return -(a * torch.log(a.clamp_min(1e-30))).sum(1).mean().item()


def make_parity_fixture():
  torch.manual_seed(0)
  model = port.build_hcfcn(NUM_CLASSES, width=WIDTH, blocks=BLOCKS, tau=TAU,
                           sim_feat=SIM_FEAT)
  perturb(model)
  init_sd = {k: v.clone() for k, v in model.state_dict().items()}

  images = np.stack([load_photo("astronaut", IMAGE_SIZE),
                     load_photo("coffee", IMAGE_SIZE)])
  labels = np.stack([make_labels(im) for im in images])
  x = torch.from_numpy(images).double()
  y = torch.from_numpy(labels)

  model.double()
  arrays = {
      "meta_width": np.array(WIDTH), "meta_blocks": np.array(BLOCKS),
      "meta_num_classes": np.array(NUM_CLASSES),
      "meta_sim_feat": np.array(SIM_FEAT), "meta_tau": np.array(TAU),
      "meta_lmbda": np.array(LMBDA), "meta_m": np.array(M),
      "images": images, "labels": labels,
  }
  for k, v in init_sd.items():
    if not k.endswith("num_batches_tracked"):
      arrays[f"sd/{k}"] = f32(v)

  # Eval mode.
  model.eval()
  print("DCN offsets and masks of the parity model (eval, fixture images):")
  describe_dcn_inputs(model, x)
  with torch.no_grad():
    assignments, logits = model(x)
  arrays["eval/logits"] = f32(logits)
  arrays["eval/a4"] = f32(assignments[4])
  arrays["eval/a8"] = f32(assignments[8])
  print(f"eval: assignment entropy A4 {entropy(assignments[4]):.3f}, "
        f"A8 {entropy(assignments[8]):.3f} nats (uniform 2.197)")

  # Train mode, dropout off.
  model.train()
  model.classifier[3].p = 0.0
  loss_fn = port.RegularisedCrossEntropy(lmbda=LMBDA, m=M)
  model.zero_grad()
  assignments, logits = model(x)
  ce = F.cross_entropy(logits, y, ignore_index=255)
  slic = loss_fn.regulariser(assignments, x)
  loss = loss_fn(assignments, logits, x, y)
  assert abs(loss.item() - (ce + LMBDA * slic).item()) < 1e-12
  loss.backward()
  arrays["train/logits"] = f32(logits)
  arrays["train/a4"] = f32(assignments[4])
  arrays["train/a8"] = f32(assignments[8])
  arrays["train/ce"] = np.array(ce.item(), np.float64)
  arrays["train/slic"] = np.array(slic.item(), np.float64)
  arrays["train/loss"] = np.array(loss.item(), np.float64)
  with torch.no_grad():
    colour = port.slic_regulariser(assignments, x, m=0.0).item()
    position = port.slic_regulariser(assignments, x, m=1.0).item() - colour
  arrays["train/slic_colour"] = np.array(colour, np.float64)
  arrays["train/slic_position"] = np.array(position, np.float64)
  print(f"train: ce {ce.item():.6f}, slic {slic.item():.6f} (colour "
        f"{colour:.6f} + m * position {M * position:.6f}), "
        f"loss {loss.item():.6f}; entropy A4 {entropy(assignments[4]):.3f}, "
        f"A8 {entropy(assignments[8]):.3f}")
  for k, p in model.named_parameters():
    arrays[f"grad/{k}"] = f32(p.grad)
  for k, v in model.state_dict().items():
    if k.endswith("running_mean") or k.endswith("running_var"):
      arrays[f"train_stats/{k}"] = f32(v)

  # FCN variant: the same encoder and head weights (and running stats).
  fcn = port.build_fcn(NUM_CLASSES, width=WIDTH, blocks=BLOCKS)
  fcn.load_state_dict({k: v for k, v in init_sd.items()
                       if not k.startswith("decoder.")})
  fcn.double().eval()
  with torch.no_grad():
    none, fcn_logits = fcn(x)
  assert none is None
  arrays["fcn/eval/logits"] = f32(fcn_logits)
  fcn.train()
  fcn.classifier[3].p = 0.0
  _, fcn_logits = fcn(x)
  fcn_loss = port.CrossEntropy()(None, fcn_logits, x, y)
  fcn_loss.backward()
  arrays["fcn/train/loss"] = np.array(fcn_loss.item(), np.float64)
  for k, p in fcn.named_parameters():
    arrays[f"fcn/grad/{k}"] = f32(p.grad)
  print(f"fcn: train ce {fcn_loss.item():.6f}; labelled pixels "
        f"{(labels != 255).mean():.1%}")
  return arrays, images, labels


def full_model_keys():
  torch.manual_seed(0)
  model = port.SegModel(port.ResNet34Encoder(), port.FCNHead(256, 8),
                        port.HCDecoder(0.07, 48))
  return {
      "model": "SegModel(ResNet34Encoder(), FCNHead(256, 8), "
               "HCDecoder(0.07, 48))",
      "num_params": sum(p.numel() for p in model.parameters()),
      "state_dict": {k: list(v.shape) for k, v in model.state_dict().items()},
  }


# ---------------------------------------------------------------------------
# Optional: the authors' own code, with torchvision's deform_conv2d stubbed
# ---------------------------------------------------------------------------

def load_authors_modules(repo):
  """Imports the authors' Functions/*.py (read with git show from ``repo``)."""
  tmp = tempfile.mkdtemp(prefix="authors_src_")
  os.makedirs(os.path.join(tmp, "Functions"))
  open(os.path.join(tmp, "Functions", "__init__.py"), "w").close()
  for name in ("model_blocks", "loss_functions", "utils"):
    src = subprocess.run(
        ["git", "-C", repo, "show", f"HEAD:Functions/{name}.py"],
        check=True, capture_output=True, text=True).stdout
    with open(os.path.join(tmp, "Functions", name + ".py"), "w") as f:
      f.write(src)

  def tv_deform_conv2d(input, offset, weight, bias=None, stride=(1, 1),  # pylint: disable=redefined-builtin
                       padding=(0, 0), dilation=(1, 1), mask=None):
    assert tuple(dilation) == (1, 1)
    return port.deform_conv2d(input, weight, bias, offset, mask, stride,
                              padding)
  tv = types.ModuleType("torchvision")
  tv.ops = types.SimpleNamespace(deform_conv2d=tv_deform_conv2d)
  sys.modules.setdefault("torchvision", tv)
  sys.modules.setdefault("segmentation_models_pytorch",
                         types.ModuleType("segmentation_models_pytorch"))
  sys.path.insert(0, tmp)
  try:
    from Functions import loss_functions, model_blocks  # pylint: disable=g-import-not-at-top
  finally:
    sys.path.remove(tmp)
    shutil.rmtree(tmp)
  return model_blocks, loss_functions


def check_against_authors(repo, images, labels):
  """Their classes, our weights: same keys, init, outputs, loss, gradients."""
  old = torch.get_default_dtype()
  torch.set_default_dtype(torch.float64)  # their constant tensors follow it
  try:
    mb, lf = load_authors_modules(repo)
    torch.manual_seed(0)
    theirs = mb.SegModel(mb.ResNet34Encoder(), mb.FCNHead(256, 8),
                         mb.HCDecoder(0.07, 48))
    torch.manual_seed(0)
    ours = port.SegModel(port.ResNet34Encoder(), port.FCNHead(256, 8),
                         port.HCDecoder(0.07, 48))
    st, so = theirs.state_dict(), ours.state_dict()
    assert list(st) == list(so), "state-dict keys differ"
    assert all(st[k].shape == so[k].shape and torch.equal(st[k], so[k])
               for k in st), "authors' init differs"
    print("authors' code: same state-dict keys, shapes and seeded init "
          f"({len(st)} entries)")

    # The authors' classes have fixed widths: compare at full width, on the
    # fixture's images, with perturbed weights.
    perturb(theirs, seed=11)
    ours.load_state_dict(theirs.state_dict())
    theirs.double()
    ours.double()
    x = torch.from_numpy(images).double()
    y = torch.from_numpy(labels)
    worst = 0.0
    for mode in ("eval", "train"):
      for m in (theirs, ours):
        getattr(m, mode)()
        m.classifier[3].p = 0.0
        m.zero_grad()
      (at, lt), (ao, lo) = theirs(x), ours(x)
      for a, b in ((lt, lo), (at[4], ao[4]), (at[8], ao[8])):
        worst = max(worst, (a - b).abs().max().item())
      loss_t = lf.RegularisedCrossEntropy(lmbda=LMBDA, m=M)(at, lt, x, y)
      loss_o = port.RegularisedCrossEntropy(lmbda=LMBDA, m=M)(ao, lo, x, y)
      worst = max(worst, abs(loss_t.item() - loss_o.item()))
      if mode == "train":
        loss_t.backward()
        loss_o.backward()
        pt, po = dict(theirs.named_parameters()), dict(ours.named_parameters())
        # Relative per parameter; the DCN biases before a train-mode BN have
        # a zero true gradient (rounding noise), hence the floor.
        floor = 1e-6 * max(p.grad.abs().max().item() for p in pt.values())
        for k in pt:
          scale = max(pt[k].grad.abs().max().item(), floor)
          worst = max(worst, (pt[k].grad - po[k].grad).abs().max().item()
                      / scale)
        for k, v in theirs.state_dict().items():
          if "running" in k:
            worst = max(worst, (v - ours.state_dict()[k]).abs().max().item())
    print(f"authors' code vs the port (full width, float64, eval + train, "
          f"logits / A4 / A8 / loss / gradients / running stats): worst "
          f"difference {worst:.2e}")
    assert worst < 1e-9, worst
  finally:
    torch.set_default_dtype(old)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--authors_repo", default=None,
                      help="a git checkout or mirror of the authors' "
                           "repository: also compare their code with the port")
  parser.add_argument("--out_dir", default=FIXTURES)
  args = parser.parse_args()
  torch.set_num_threads(1)
  start = time.time()
  os.makedirs(args.out_dir, exist_ok=True)

  check_deform_conv()
  dcn = make_dcn_fixture()
  parity, images, labels = make_parity_fixture()
  keys = full_model_keys()
  if args.authors_repo:
    check_against_authors(args.authors_repo, images, labels)

  paths = {
      "authors_dcn.npz": dcn, "authors_parity.npz": parity}
  for name, arrays in paths.items():
    write_npz(os.path.join(args.out_dir, name), arrays)
  with open(os.path.join(args.out_dir, "authors_keys.json"), "w") as f:
    json.dump(keys, f, indent=1)
    f.write("\n")
  for name in list(paths) + ["authors_keys.json"]:
    size = os.path.getsize(os.path.join(args.out_dir, name))
    print(f"wrote {os.path.join(args.out_dir, name)} ({size / 1024:.1f} KiB)")
  print(f"full model: {len(keys['state_dict'])} state-dict entries, "
        f"{keys['num_params']:,} parameters; done in "
        f"{time.time() - start:.1f} s")


if __name__ == "__main__":
  main()
