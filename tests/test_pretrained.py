"""torchvision state dict -> encoder variables, checked against NumPy (and
torch where it is installed) forward passes of the torchvision architecture."""

import functools

import jax
import numpy as np
import pytest

from coarseseg_jax.configs import default
from coarseseg_jax import models
from coarseseg_jax.models import pretrained
from coarseseg_jax.models import resnet

try:
  import torch  # pylint: disable=g-import-not-at-top
except ImportError:
  torch = None

RESNET34_BLOCKS = (3, 4, 6, 3)


def random_resnet34_state_dict(seed=0, width=64, blocks=RESNET34_BLOCKS):
  """A torchvision-resnet34-shaped state dict with random values."""
  rng = np.random.default_rng(seed)
  sd = {}

  def conv(key, o, i, k):
    std = np.sqrt(2.0 / (i * k * k))
    sd[key] = (rng.standard_normal((o, i, k, k)) * std).astype(np.float32)

  def bn(key, c):
    sd[f"{key}.weight"] = rng.uniform(0.5, 1.5, c).astype(np.float32)
    sd[f"{key}.bias"] = rng.normal(0, 0.1, c).astype(np.float32)
    sd[f"{key}.running_mean"] = rng.normal(0, 0.2, c).astype(np.float32)
    sd[f"{key}.running_var"] = rng.uniform(0.5, 2.0, c).astype(np.float32)
    sd[f"{key}.num_batches_tracked"] = np.array(7, np.int64)

  conv("conv1.weight", width, 3, 7)
  bn("bn1", width)
  cin = width
  for stage, n in enumerate(blocks):
    c = width * 2 ** stage
    for i in range(n):
      p = f"layer{stage + 1}.{i}"
      conv(f"{p}.conv1.weight", c, cin if i == 0 else c, 3)
      bn(f"{p}.bn1", c)
      conv(f"{p}.conv2.weight", c, c, 3)
      bn(f"{p}.bn2", c)
      if i == 0 and stage > 0:
        conv(f"{p}.downsample.0.weight", c, cin, 1)
        bn(f"{p}.downsample.1", c)
    cin = c
  sd["fc.weight"] = rng.normal(0, 0.01, (1000, cin)).astype(np.float32)
  sd["fc.bias"] = np.zeros(1000, np.float32)
  return sd


# ------------------------------------------- NumPy reference (torchvision) ---
def np_conv(x, w, stride=1, padding=0, bias=None):
  """NCHW-free conv: x (B, H, W, C) float64, w torch (O, I, kh, kw)."""
  o, _, kh, kw = w.shape
  xp = np.pad(x, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
  win = np.lib.stride_tricks.sliding_window_view(xp, (kh, kw), axis=(1, 2))
  win = win[:, ::stride, ::stride]  # (B, Ho, Wo, C, kh, kw)
  y = np.einsum("bhwcij,ocij->bhwo", win, np.asarray(w, np.float64))
  return y if bias is None else y + bias


def np_bn(x, sd, key, eps=1e-5):
  g = lambda n: np.asarray(sd[f"{key}.{n}"], np.float64)
  return (x - g("running_mean")) / np.sqrt(g("running_var") + eps) * g(
      "weight") + g("bias")


def np_maxpool(x, k, stride, padding):
  xp = np.pad(x, ((0, 0), (padding, padding), (padding, padding), (0, 0)),
              constant_values=-np.inf)
  win = np.lib.stride_tricks.sliding_window_view(xp, (k, k), axis=(1, 2))
  return win[:, ::stride, ::stride].max(axis=(-1, -2))


relu = lambda x: np.maximum(x, 0)


def np_resnet34_features(sd, images, blocks=(3, 4, 6)):
  """torchvision resnet34 (eval mode) up to layer3 on [0, 1] NHWC images."""
  x = (np.asarray(images, np.float64) - resnet.IMAGENET_MEAN) / np.asarray(
      resnet.IMAGENET_STD)
  feats = {}
  x = relu(np_bn(np_conv(x, sd["conv1.weight"], 2, 3), sd, "bn1"))
  feats["stem"] = x
  x = np_maxpool(x, 3, 2, 1)
  for stage, n in enumerate(blocks):
    for i in range(n):
      p = f"layer{stage + 1}.{i}"
      s = 2 if (i == 0 and stage > 0) else 1
      y = relu(np_bn(np_conv(x, sd[f"{p}.conv1.weight"], s, 1), sd,
                     f"{p}.bn1"))
      y = np_bn(np_conv(y, sd[f"{p}.conv2.weight"], 1, 1), sd, f"{p}.bn2")
      if f"{p}.downsample.0.weight" in sd:
        x = np_bn(np_conv(x, sd[f"{p}.downsample.0.weight"], s, 0), sd,
                  f"{p}.downsample.1")
      x = relu(y + x)
    feats[f"layer{stage + 1}"] = x
  return feats


def torch_resnet34_features(sd, images):
  """The same with torch.nn.functional (when torch is installed)."""
  f = torch.nn.functional
  t = {k: torch.from_numpy(np.asarray(v)) for k, v in sd.items()}
  bn = lambda x, k: f.batch_norm(x, t[f"{k}.running_mean"],
                                 t[f"{k}.running_var"], t[f"{k}.weight"],
                                 t[f"{k}.bias"], False, 0.0, 1e-5)
  x = torch.from_numpy(np.asarray(images, np.float32)).permute(0, 3, 1, 2)
  mean = torch.tensor(resnet.IMAGENET_MEAN).view(1, 3, 1, 1)
  std = torch.tensor(resnet.IMAGENET_STD).view(1, 3, 1, 1)
  x = f.relu(bn(f.conv2d((x - mean) / std, t["conv1.weight"], None, 2, 3),
                "bn1"))
  feats = {"stem": x}
  x = f.max_pool2d(x, 3, 2, 1)
  for stage, n in enumerate((3, 4, 6)):
    for i in range(n):
      p = f"layer{stage + 1}.{i}"
      s = 2 if (i == 0 and stage > 0) else 1
      y = f.relu(bn(f.conv2d(x, t[f"{p}.conv1.weight"], None, s, 1),
                    f"{p}.bn1"))
      y = bn(f.conv2d(y, t[f"{p}.conv2.weight"], None, 1, 1), f"{p}.bn2")
      if f"{p}.downsample.0.weight" in t:
        x = bn(f.conv2d(x, t[f"{p}.downsample.0.weight"], None, s, 0),
               f"{p}.downsample.1")
      x = f.relu(y + x)
    feats[f"layer{stage + 1}"] = x
  return {k: v.permute(0, 2, 3, 1).numpy() for k, v in feats.items()}


# ------------------------------------------------------------------ tests ---
def model_config(name="hcfcn", **overrides):
  c = default.get_config().model
  c.name = name
  c.num_classes = 8
  for k, v in overrides.items():
    c[k] = v
  return c


def template(model_config, size=32):
  """Variables of the right shapes (zeros) without compiling an init."""
  shapes = models.init_shapes(model_config, image_size=size)
  return jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), shapes)


@functools.lru_cache(maxsize=None)
def saved_state_dict(tmp_root):
  sd = random_resnet34_state_dict()
  path = f"{tmp_root}/resnet34.npz"
  np.savez(path, **sd)
  return sd, path


@pytest.fixture(scope="module")
def resnet_file(tmp_path_factory):
  return saved_state_dict(str(tmp_path_factory.mktemp("weights")))


@pytest.mark.slow  # 5 s on 2 cores (compiles or runs more).
@pytest.mark.parametrize("deformable", [True, False])
def test_resnet34_conversion_matches_reference_forward(resnet_file, deformable):
  sd, path = resnet_file
  cfg = model_config(deformable=deformable)
  variables = pretrained.load_pretrained(path, cfg, template(cfg))
  enc = variables["params"]["encoder"]
  if deformable:  # The 1x1 shortcut sits x2 at the centre of a 3x3 kernel.
    k = enc["layer2_0"]["downsample_conv"]["kernel"]
    np.testing.assert_array_equal(
        k[1, 1], 2 * sd["layer2.0.downsample.0.weight"][:, :, 0, 0].T)
    assert not np.any(k[0]) and not np.any(enc["layer3_0"]["conv1"][
        "offset_conv"]["kernel"])
  encoder = resnet.encoder_from_config(cfg)
  images = np.random.default_rng(1).uniform(0, 1, (2, 32, 48, 3)).astype(
      np.float32)
  got = jax.jit(
      lambda v, x: encoder.apply(v, resnet.normalise(x), train=False))(
      {"params": enc, "batch_stats": variables["batch_stats"]["encoder"]},
      images)
  refs = [np_resnet34_features(sd, images)]
  if torch is not None:
    refs.append(torch_resnet34_features(sd, images))
  for ref in refs:
    for key in ("stem", "layer1", "layer2", "layer3"):
      assert got[key].shape == ref[key].shape
      scale = max(1.0, np.abs(ref[key]).max())
      np.testing.assert_allclose(got[key], ref[key], rtol=0,
                                 atol=1e-4 * scale, err_msg=key)
  assert np.abs(refs[0]["layer3"]).max() > 0.1


def test_other_models_take_the_same_encoder(resnet_file):
  sd, _ = resnet_file
  for name in ("fcn", "unet"):
    cfg = model_config(name)
    variables = pretrained.convert_resnet34(sd, template(cfg))
    k = variables["params"]["encoder"]["layer3_5"]["conv2"]["kernel"]
    np.testing.assert_array_equal(
        k, np.transpose(sd["layer3.5.conv2.weight"], (2, 3, 1, 0)))
    np.testing.assert_array_equal(
        variables["batch_stats"]["encoder"]["bn1"]["var"],
        sd["bn1.running_var"])
    # Decoders and heads keep their (here: zero) initialisation.
    assert not any(np.any(v) for v in jax.tree.leaves(
        {k: v for k, v in variables["params"].items() if k != "encoder"}))


@pytest.mark.slow  # 4 s on 2 cores (compiles or runs more).
def test_conversion_errors_are_clear(resnet_file):
  sd, _ = resnet_file
  broken = dict(sd)
  del broken["layer2.0.downsample.0.weight"]
  broken["layer1.1.bn2.weight"] = np.ones(3, np.float32)
  with pytest.raises(ValueError) as err:
    pretrained.convert_resnet34(broken, template(model_config()))
  msg = str(err.value)
  assert "missing keys (1): layer2.0.downsample.0.weight" in msg
  assert "layer1.1.bn2.weight: state dict (3,)" in msg
  assert "encoder/layer1_1/bn2/scale (64,)" in msg
  with pytest.raises(ValueError, match="mis-shaped keys"):
    pretrained.convert_resnet34(sd, template(model_config(width=32)))
  small = model_config(stage_blocks=(1, 2, 1))
  with pytest.raises(ValueError,
                     match=r"layer1\.1.*stage_blocks = \(3, 4, 6\)"):
    pretrained.convert_resnet34(sd, template(small))
  variables = pretrained.convert_resnet34(sd, template(small),
                                          allow_partial=True)
  np.testing.assert_array_equal(
      variables["params"]["encoder"]["layer2_1"]["conv1"]["kernel"],
      np.transpose(sd["layer2.1.conv1.weight"], (2, 3, 1, 0)))
  with pytest.raises(ValueError, match="no ResNet encoder"):
    pretrained.convert_resnet34(sd, template(model_config("fcn16s_vgg")))


def test_state_dict_files(tmp_path, resnet_file):
  sd, path = resnet_file
  loaded = pretrained.load_torchvision_state_dict(path)
  assert sorted(loaded) == sorted(sd)
  np.testing.assert_array_equal(loaded["conv1.weight"], sd["conv1.weight"])
  prefixed = tmp_path / "dp.npz"
  np.savez(prefixed, **{f"module.{k}": v for k, v in list(sd.items())[:3]})
  assert sorted(pretrained.load_torchvision_state_dict(str(prefixed))) == (
      sorted(list(sd)[:3]))
  pth = tmp_path / "resnet34.pth"
  if torch is not None:
    torch.save({k: torch.from_numpy(v) for k, v in sd.items()}, pth)
    from_pth = pretrained.load_torchvision_state_dict(str(pth))
    np.testing.assert_array_equal(from_pth["layer3.5.bn2.running_var"],
                                  sd["layer3.5.bn2.running_var"])
  else:
    pth.write_bytes(b"not read")
    with pytest.raises(ImportError, match="pip install torch"):
      pretrained.load_torchvision_state_dict(str(pth))
  with pytest.raises(FileNotFoundError, match="nothing is downloaded"):
    pretrained.load_torchvision_state_dict(str(tmp_path / "absent.npz"))
  (tmp_path / "w.h5").write_bytes(b"")
  with pytest.raises(ValueError, match=".npz, .pth or .pt"):
    pretrained.load_torchvision_state_dict(str(tmp_path / "w.h5"))


def random_vgg16_state_dict(width, seed=0):
  """torchvision-vgg16-structured state dict, channels scaled to ``width``."""
  rng = np.random.default_rng(seed)
  sd, cin = {}, 3
  mults = [1, 1, 2, 2, 4, 4, 4, 8, 8, 8, 8, 8, 8]
  for idx, m in zip(pretrained.VGG16_CONV_INDICES, mults):
    c = width * m
    sd[f"features.{idx}.weight"] = rng.normal(
        0, np.sqrt(2 / (9 * cin)), (c, cin, 3, 3)).astype(np.float32)
    sd[f"features.{idx}.bias"] = rng.normal(0, 0.1, c).astype(np.float32)
    cin = c
  fc = 64 * width
  for idx, (o, i) in ((0, (fc, cin * 49)), (3, (fc, fc)), (6, (1000, fc))):
    sd[f"classifier.{idx}.weight"] = rng.normal(
        0, np.sqrt(2 / i), (o, i)).astype(np.float32)
    sd[f"classifier.{idx}.bias"] = rng.normal(0, 0.1, o).astype(np.float32)
  return sd


def test_vgg16_conversion_matches_reference_classifier(tmp_path):
  width = 8
  sd = random_vgg16_state_dict(width)
  path = tmp_path / "vgg16.npz"
  np.savez(path, **sd)
  cfg = model_config("fcn16s_vgg", width=width, num_classes=3)
  variables = pretrained.load_pretrained(str(path), cfg, template(cfg, 224))
  images = np.random.default_rng(2).uniform(0, 1, (1, 224, 224, 3)).astype(
      np.float32)
  model = models.create_model(cfg)
  _, state = jax.jit(lambda v, x: model.apply(
      v, x, train=False, capture_intermediates=True,
      mutable=["intermediates"]))(variables, images)
  inter = state["intermediates"]
  # NumPy VGG-16 trunk, then torchvision's classifier on the 7x7 pool5: it
  # equals the fully convolutional fc6 / fc7 at the centre of the map.
  x = (images.astype(np.float64) - resnet.IMAGENET_MEAN) / np.asarray(
      resnet.IMAGENET_STD)
  for n, idx in enumerate(pretrained.VGG16_CONV_INDICES):
    x = relu(np_conv(x, sd[f"features.{idx}.weight"], 1, 1,
                     sd[f"features.{idx}.bias"]))
    if n in (1, 3, 6, 9, 12):
      x = np_maxpool(x, 2, 2, 0)
  flat = np.transpose(x, (0, 3, 1, 2)).reshape(1, -1)  # torch flatten (C,H,W)
  fc6 = flat @ sd["classifier.0.weight"].T + sd["classifier.0.bias"]
  fc7 = relu(fc6) @ sd["classifier.3.weight"].T + sd["classifier.3.bias"]
  for name, ref in (("fc6", fc6), ("fc7", fc7)):
    got = inter[name]["__call__"][0][:, 3, 3]
    np.testing.assert_allclose(got, ref, rtol=0,
                               atol=1e-4 * max(1, np.abs(ref).max()))
  assert np.abs(fc7).max() > 0.1
  del sd["classifier.3.bias"]
  with pytest.raises(ValueError,
                     match=r"missing keys \(1\): classifier.3.bias"):
    pretrained.convert_vgg16(sd, template(cfg, 224))
