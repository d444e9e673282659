"""Paper mode computes the authors' HCFCN-16: outputs, loss and gradients.

The references are a PyTorch port of the authors' code (tests/authors_torch.py)
run in float64 by tests/make_authors_fixture.py, which wrote the fixtures read
here (no torch needed): a small model with the authors' layout and state-dict
names (width 8, blocks (2, 2, 2), 4 classes, 8 similarity features), weights
perturbed away from the initialisation (non-zero deformable offsets, masks
not 0.5, random BN statistics), two photos at 64 x 64. The JAX model runs the
dataset configs' default (`configs/default.py: authors_code`) in float32 and
gets its weights through `models.authors.convert`, so this also tests the
loader. Tolerances: a float32 computation against a float64 one. Measured
(max |diff| / max |ref| per array): eval logits and assignments <= 4e-7; in
train mode the BN batch statistics of this fixture's tiny batches (32 values
per channel at stride 16) amplify float32 rounding: logits and assignments
<= 7e-5, the losses <= 8e-7, parameter gradients median 5e-5, max 2e-4
(offset / mask convs, through the bilinear sampling).
"""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from coarseseg_jax import losses
from coarseseg_jax import models
from coarseseg_jax.configs import default
from coarseseg_jax.models import authors
from coarseseg_jax.models import deformable
from coarseseg_jax.models import pretrained

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")
RTOL = 2e-5  # Of the largest magnitude of each compared array.


@pytest.fixture(scope="module")
def fx():
  with np.load(os.path.join(FIXTURES, "authors_parity.npz")) as f:
    return {k: f[k] for k in f.files}


def model_config(fx, name="hcfcn"):
  config = default.authors_code(default.get_config())
  m = config.model
  m.name, m.num_classes = name, int(fx["meta_num_classes"])
  m.width, m.stage_blocks = int(fx["meta_width"]), tuple(
      int(b) for b in fx["meta_blocks"])
  m.head_channels, m.sim_features = m.width, int(fx["meta_sim_feat"])
  m.tau, m.dropout = float(fx["meta_tau"]), 0.0  # The fixture: dropout off.
  return config


def state_dict(fx, fcn=False):
  sd = {k[3:]: v for k, v in fx.items() if k.startswith("sd/")}
  return {k: v for k, v in sd.items()
          if not (fcn and k.startswith("decoder."))}


def load(fx, name="hcfcn"):
  config = model_config(fx, name)
  shapes = models.init_shapes(config.model, image_size=64)
  variables = authors.convert(state_dict(fx, name == "fcn"), shapes)
  return config, models.create_model(config.model), variables


def nhwc(x):
  return jnp.asarray(np.transpose(x, (0, 2, 3, 1)))


def close(got, want, rtol=RTOL, what=""):
  got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
  assert got.shape == want.shape, (what, got.shape, want.shape)
  scale = max(np.abs(want).max(), 1e-12)
  err = np.abs(got - want).max() / scale
  assert err <= rtol, f"{what}: max |diff| / max |ref| = {err:.2e}"
  return err


def as_authors(path, grad):
  """A Flax gradient as the authors' array layout (kernels (O, I, kh, kw))."""
  g = np.asarray(grad)
  return np.transpose(g, (3, 2, 0, 1)) if path[-1] == "kernel" else g


def test_eval_mode_logits_and_assignments(fx):
  _, model, variables = load(fx)
  logits, (a4, a8) = jax.jit(model.apply)(variables, nhwc(fx["images"]))
  close(logits, nhwc(fx["eval/logits"]), what="logits")
  close(a4, nhwc(fx["eval/a4"]), what="A4")
  close(a8, nhwc(fx["eval/a8"]), what="A8")
  # The authors' out-of-grid candidates keep weight at the border.
  assert float(jnp.max(a8[:, 0, :, :3])) > 1e-3


def _train_loss(model, config, fx):
  images = nhwc(fx["images"])
  labels = jnp.asarray(fx["labels"], jnp.int32)
  t = config.train

  def loss_fn(params, batch_stats):
    (logits, assignments), new = model.apply(
        {"params": params, "batch_stats": batch_stats}, images, train=True,
        mutable=["batch_stats"], rngs={"dropout": jax.random.key(0)})
    total, terms = losses.regularized_loss(
        logits, labels, images, assignments, lmbda=float(fx["meta_lmbda"]),
        m=float(fx["meta_m"]), slic_resize=t.slic_resize,
        slic_position_norm=t.slic_position_norm, return_terms=True)
    return total, (terms, logits, assignments, new["batch_stats"])

  return loss_fn


@pytest.mark.slow  # 7 s on 2 cores (compiles or runs more).
def test_train_mode_loss_gradients_and_statistics(fx):
  config, model, variables = load(fx)
  loss_fn = _train_loss(model, config, fx)
  (total, (terms, logits, (a4, a8), stats)), grads = jax.jit(
      jax.value_and_grad(loss_fn, has_aux=True))(
          variables["params"], variables["batch_stats"])
  close(logits, nhwc(fx["train/logits"]), 3e-4, "train logits")
  close(a4, nhwc(fx["train/a4"]), 3e-4, "train A4")
  close(a8, nhwc(fx["train/a8"]), 3e-4, "train A8")
  close(terms["cross_entropy"], fx["train/ce"], 1e-5, "cross-entropy")
  close(terms["slic"], fx["train/slic"], 1e-5, "regularizer")
  close(total, fx["train/loss"], 1e-5, "loss")
  plan = authors.mapping(variables)
  flat = jax.tree_util.tree_flatten_with_path(grads)[0]
  checked = 0
  for path, g in flat:
    path = ("params",) + tuple(p.key for p in path)
    key = plan[path][0]
    want = fx[f"grad/{key}"]
    if np.abs(want).max() < 1e-9:  # DCN biases before a train-mode BN: 0.
      assert np.abs(np.asarray(g)).max() < 1e-5, key
      continue
    close(as_authors(path, g), want, 6e-4, f"grad {key}")
    checked += 1
  assert checked >= 60
  # Running statistics: the means exactly; the variances up to PyTorch's
  # unbiased n / (n - 1) in the update (Flax uses the biased variance).
  for path, value in jax.tree_util.tree_flatten_with_path(stats)[0]:
    path = ("batch_stats",) + tuple(p.key for p in path)
    key = plan[path][0]
    want, old = fx[f"train_stats/{key}"], fx[f"sd/{key}"]
    if key.endswith("running_var"):
      n = _bn_count(key)
      want = 0.9 * old + (want - 0.9 * old) * (n - 1) / n
    close(value, want, 1e-4, key)


def _bn_count(key):
  """Values per channel that a BN of the 64 x 64, batch-2 fixture sees."""
  side = 64 // 2  # Stem.
  if key.startswith(("encoder.layer_1", )):
    side = 16
  elif key.startswith("encoder.layer_2"):
    side = 8
  elif key.startswith(("encoder.layer_3", "classifier")):
    side = 4
  return 2 * side * side


@pytest.mark.slow  # 5 s on 2 cores (compiles or runs more).
def test_fcn_matches_the_authors_fcn(fx):
  config, model, variables = load(fx, "fcn")
  images = nhwc(fx["images"])
  logits, assignments = jax.jit(model.apply)(variables, images)
  assert assignments == []
  close(logits, nhwc(fx["fcn/eval/logits"]), what="FCN logits")

  def loss_fn(params):
    (out, _), _ = model.apply(
        {"params": params, "batch_stats": variables["batch_stats"]}, images,
        train=True, mutable=["batch_stats"],
        rngs={"dropout": jax.random.key(0)})
    return losses.cross_entropy(out, jnp.asarray(fx["labels"], jnp.int32))

  loss, grads = jax.jit(jax.value_and_grad(loss_fn))(variables["params"])
  close(loss, fx["fcn/train/loss"], 1e-5, "FCN loss")
  plan = authors.mapping(variables)
  for path, g in jax.tree_util.tree_flatten_with_path(grads)[0]:
    path = ("params",) + tuple(p.key for p in path)
    want = fx[f"fcn/grad/{plan[path][0]}"]
    if np.abs(want).max() >= 1e-9:
      close(as_authors(path, g), want, 6e-4, f"FCN grad {plan[path][0]}")


@pytest.mark.slow  # 8 s on 2 cores (compiles or runs more).
def test_deformable_conv_matches_torchvision_semantics():
  with np.load(os.path.join(FIXTURES, "authors_dcn.npz")) as f:
    d = {k: f[k] for k in f.files}
  b, _, ho, wo = d["offset"].shape
  x = nhwc(d["x"])
  kernel = jnp.asarray(np.transpose(d["weight"], (2, 3, 1, 0)))
  offsets = nhwc(d["offset"]).reshape(b, ho, wo, 9, 2)
  mask = nhwc(d["mask"])
  bias = jnp.asarray(d["bias"])

  def f(x, kernel, bias, offsets, mask):
    return deformable.deform_conv2d(
        x, kernel, offsets, mask, stride=int(d["stride"]),
        padding=int(d["padding"])) + bias

  out, vjp = jax.vjp(f, x, kernel, bias, offsets, mask)
  close(out, nhwc(d["out"]), 1e-5, "DCN out")
  gx, gk, gb, go, gm = vjp(nhwc(d["g"]))
  close(gx, nhwc(d["grad_x"]), 1e-5, "DCN grad x")
  close(np.transpose(gk, (3, 2, 0, 1)), d["grad_weight"], 1e-5, "grad w")
  close(gb, d["grad_bias"], 1e-5, "DCN grad bias")
  close(go.reshape(b, ho, wo, 18), nhwc(d["grad_offset"]), 1e-5, "grad off")
  close(gm, nhwc(d["grad_mask"]), 1e-5, "DCN grad mask")


def test_full_size_state_dict_loads_from_npz(tmp_path):
  with open(os.path.join(FIXTURES, "authors_keys.json")) as f:
    keys = json.load(f)["state_dict"]
  rng = np.random.default_rng(0)
  sd = {k: rng.standard_normal(shape).astype(np.float32)
        for k, shape in keys.items() if not k.endswith("num_batches_tracked")}
  path = tmp_path / "authors.npz"
  np.savez(path, **sd)
  config = default.authors_code(default.get_config())
  config.model.num_classes = 8
  variables = pretrained.from_authors(str(path), config.model)
  n = sum(v.size for v in jax.tree.leaves(variables["params"]))
  assert n == json.load(open(os.path.join(FIXTURES, "authors_keys.json")))[
      "num_params"]
  kernel = variables["params"]["encoder"]["layer3_0"]["downsample_conv"][
      "offset_conv"]["kernel"]
  np.testing.assert_array_equal(
      kernel, np.transpose(
          sd["encoder.layer_3_down.downsample.0.conv_offset_mask.weight"],
          (2, 3, 1, 0)))
  np.testing.assert_array_equal(
      variables["batch_stats"]["head"]["bn"]["var"],
      sd["classifier.1.running_var"])


@pytest.mark.parametrize("change, message", [
    (lambda sd, m: sd.pop("classifier.4.bias"), "missing keys"),
    (lambda sd, m: setattr(m, "deform_bias", False),
     "set model.deform_bias=True"),
    (lambda sd, m: setattr(m, "name", "fcn"), "set model.name=hcfcn"),
    (lambda sd, m: sd.update({"classifier.0.weight": np.zeros((8, 8, 3, 3),
                                                               np.float32)}),
     "mis-shaped keys"),
    (lambda sd, m: setattr(m, "similarity", "hcformer"),
     "model variables no key fills"),
])
def test_wrong_or_missing_keys_give_one_message(fx, change, message):
  config = model_config(fx)
  sd = state_dict(fx)
  change(sd, config.model)
  shapes = models.init_shapes(config.model, image_size=64)
  with pytest.raises(ValueError, match=message) as e:
    authors.convert(sd, shapes)
  assert "\n" not in str(e.value)
