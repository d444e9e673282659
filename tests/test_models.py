"""Tests of the segmentation models (tiny configs; full size via eval_shape)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from coarseseg_jax.configs import default
from coarseseg_jax import models
from coarseseg_jax import superpixels

# Compiling dominates these tests' time and the tiny models run in
# milliseconds: XLA's backend optimisation level 0 compiles 2-4x faster.
jit = functools.partial(
    jax.jit, compiler_options={"xla_backend_optimization_level": 0})


def tiny_config(name, **overrides):
  c = default.get_config().model
  c.name = name
  c.num_classes = 5
  c.stage_blocks = (1, 1, 1)
  c.width = 8
  c.head_channels = 8
  c.sim_features = 8
  for k, v in overrides.items():
    c[k] = v
  return c


def images(b, h, w, seed=0):
  return jax.random.uniform(jax.random.key(seed), (b, h, w, 3))


class Bundle:
  """A tiny model with its jitted init / eval / loss-and-grad functions.

  Compiling is what costs time in these tests, so each function is jitted
  once per model and shared by the tests.
  """

  def __init__(self, name, **overrides):
    self.model = model = models.create_model(tiny_config(name, **overrides))
    self.init_fn = jit(functools.partial(model.init, train=False))
    self.variables = self.init_fn({"params": jax.random.key(0)},
                                  images(1, 32, 32))
    self.eval_fn = jit(functools.partial(model.apply, train=False))
    self.loss_fn = functools.partial(loss_fn, model)
    self.grad_fn = jit(jax.value_and_grad(self.loss_fn, has_aux=True))

  def grads(self, x, labels, key=1, variables=None):
    v = self.variables if variables is None else variables
    return self.grad_fn(v["params"], v.get("batch_stats", {}), x, labels,
                        jax.random.key(key))


@functools.lru_cache(maxsize=None)
def bundle(name, **overrides):
  return Bundle(name, **overrides)


def loss_fn(model, params, batch_stats, x, labels, key):
  """Cross-entropy in train mode -> (loss, (logits, assignments, new_state))."""
  (logits, assignments), new_state = model.apply(
      {"params": params, "batch_stats": batch_stats}, x, train=True,
      rngs={"dropout": key}, mutable=["batch_stats"])
  logp = jax.nn.log_softmax(logits)
  loss = -jnp.mean(jnp.take_along_axis(logp, labels[..., None], -1))
  # A small term per assignment, like the regularizer (the assignments reach
  # the loss through the logits as well).
  for a in assignments:
    loss = loss + 1e-3 * jnp.mean(a * jnp.arange(9.0))
  return loss, (logits, assignments, new_state)


X = images(3, 48, 32, seed=3)
LABELS = jax.random.randint(jax.random.key(4), (3, 48, 32), 0, 5)


@functools.lru_cache(maxsize=None)
def evaluated(name):
  b = bundle(name)
  return b.eval_fn(b.variables, X)


@functools.lru_cache(maxsize=None)
def trained(name):
  """((loss, (logits, assignments, new_state)), grads) on X in train mode."""
  return bundle(name).grads(X, LABELS)


@pytest.mark.slow  # 17 s on 2 cores (compiles or runs more).
@pytest.mark.parametrize("name", models.MODEL_NAMES)
def test_shapes_dtypes_and_batch_stats(name):
  logits, assignments = evaluated(name)
  assert logits.shape == (3, 48, 32, 5) and logits.dtype == jnp.float32
  assert np.all(np.isfinite(logits))
  if name == "hcfcn":
    assert [a.shape for a in assignments] == [(3, 12, 8, 9), (3, 6, 4, 9)]
    assert all(a.dtype == jnp.float32 for a in assignments)
  else:
    assert assignments == []
  # train=True with mutable batch_stats: ((logits, assignments), new_state).
  (_, (logits_t, _, new_state)), _ = trained(name)
  assert logits_t.shape == (3, 48, 32, 5)
  assert np.abs(logits_t - logits).max() > 0  # Batch stats, dropout.
  if name == "fcn16s_vgg":
    assert not new_state.get("batch_stats")  # No BN in VGG-16.
  else:
    variables = bundle(name).variables
    changed = jax.tree.map(lambda a, b: np.abs(a - b).max(),
                           new_state["batch_stats"], variables["batch_stats"])
    assert min(jax.tree.leaves(changed)) > 0


def test_any_batch_size_and_number_of_classes():
  for name in models.MODEL_NAMES:
    model = models.create_model(tiny_config(name, num_classes=1))
    out = jax.eval_shape(lambda x, m=model: m.init_with_output(
        {"params": jax.random.key(0)}, x)[0], jnp.zeros((7, 16, 64, 3)))
    assert out[0].shape == (7, 16, 64, 1)
    assert len(out[1]) == (2 if name == "hcfcn" else 0)


def test_errors():
  for name in models.MODEL_NAMES:
    model = models.create_model(tiny_config(name))
    with pytest.raises(ValueError, match="multiples of 16"):
      jax.eval_shape(lambda x, m=model: m.init(jax.random.key(0), x),
                     jnp.zeros((1, 40, 32, 3)))
  with pytest.raises(ValueError, match="hcfcn, fcn, unet, fcn16s_vgg"):
    models.create_model(tiny_config("resnet"))
  with pytest.raises(ValueError, match="model.dtype"):
    models.create_model(tiny_config("fcn", dtype="float16"))


@pytest.mark.slow  # 6 s on 2 cores (compiles or runs more).
def test_assignments_are_partitions_of_unity_inside_the_grid():
  _, assignments = evaluated("hcfcn")
  (_, (_, assignments_t, _)), _ = trained("hcfcn")
  for a in list(assignments) + list(assignments_t):
    a = np.asarray(a)
    np.testing.assert_allclose(a.sum(-1), 1.0, atol=1e-5)
    valid = superpixels.valid_mask(a.shape[1] // 2, a.shape[2] // 2)
    assert np.all(a[:, ~valid] == 0.0)
    assert np.all(a >= 0) and a[:, valid].max() > 0


def test_cosine_similarity_and_plain_convs():
  model = models.create_model(
      tiny_config("hcfcn", similarity="cosine", deformable=False))
  variables = jit(functools.partial(model.init, train=False))(
      {"params": jax.random.key(0)}, X)
  flat = jax.tree_util.tree_flatten_with_path(variables["params"])[0]
  assert not any("offset_conv" in jax.tree_util.keystr(p) for p, _ in flat)
  assert variables["params"]["encoder"]["layer2_0"]["downsample_conv"][
      "kernel"].shape == (3, 3, 8, 16)
  logits, assignments = jit(functools.partial(model.apply, train=False))(
      variables, X)
  assert logits.shape == (3, 48, 32, 5) and len(assignments) == 2
  np.testing.assert_allclose(assignments[0].sum(-1), 1.0, atol=1e-5)


@pytest.mark.slow  # 20 s on 2 cores (compiles or runs more).
@pytest.mark.parametrize("name", models.MODEL_NAMES)
def test_gradients_reach_every_parameter(name):
  _, grads = trained(name)
  flat = jax.tree_util.tree_flatten_with_path(grads)[0]
  dead = [jax.tree_util.keystr(p) for p, g in flat
          if not np.all(np.isfinite(g)) or not np.any(g)]
  assert not dead, f"no gradient reaches {dead}"
  assert len(flat) > 10


def test_determinism_for_a_fixed_seed():
  b = bundle("hcfcn")
  x = images(1, 32, 32)
  v1 = b.init_fn({"params": jax.random.key(0)}, x)
  v2 = b.init_fn({"params": jax.random.key(8)}, x)
  assert jax.tree.all(jax.tree.map(np.array_equal, v1, b.variables))
  assert not np.array_equal(v2["params"]["head"]["conv"]["kernel"],
                            v1["params"]["head"]["conv"]["kernel"])
  (l1, (o1, a1, _)), g1 = trained("hcfcn")
  (l2, (o2, a2, _)), g2 = b.grads(X, LABELS, key=1, variables=v1)
  (_, (o3, _, _)), _ = b.grads(X, LABELS, key=2)  # Another dropout key.
  np.testing.assert_array_equal(o1, o2)
  np.testing.assert_array_equal(a1[0], a2[0])
  assert float(l1) == float(l2)
  assert jax.tree.all(jax.tree.map(np.array_equal, g1, g2))
  assert np.abs(o1 - o3).max() > 0


@pytest.mark.slow  # 8 s on 2 cores (compiles or runs more).
def test_train_step_compiles_once_per_shape():
  b = bundle("hcfcn")
  traces = []

  @jit
  def step(params, batch_stats, x, labels):
    traces.append(x.shape)
    (loss, (_, _, new_state)), grads = jax.value_and_grad(
        b.loss_fn, has_aux=True)(params, batch_stats, x, labels,
                                 jax.random.key(0))
    params = jax.tree.map(lambda p, g: p - 1e-2 * g, params, grads)
    return params, new_state["batch_stats"], loss

  params, stats = b.variables["params"], b.variables["batch_stats"]
  labels = jnp.zeros((2, 32, 32), jnp.int32)
  losses = []
  for seed in range(3):
    params, stats, loss = step(params, stats, images(2, 32, 32, seed), labels)
    losses.append(float(loss))
  assert traces == [(2, 32, 32, 3)]
  assert np.all(np.isfinite(losses)) and losses[-1] < losses[0]
  step(params, stats, images(1, 32, 32), jnp.zeros((1, 32, 32), jnp.int32))
  assert traces == [(2, 32, 32, 3), (1, 32, 32, 3)]


@pytest.mark.slow  # 4 s on 2 cores (compiles or runs more).
def test_bfloat16_computation_float32_params():
  model16 = models.create_model(tiny_config("hcfcn", dtype="bfloat16"))
  shapes = jax.eval_shape(functools.partial(model16.init, train=False),
                          {"params": jax.random.key(0)}, X)
  assert all(v.dtype == jnp.float32 for v in jax.tree.leaves(shapes))
  # Forward and backward in bfloat16, with the float32 model's variables.
  v = bundle("hcfcn").variables
  (loss16, (l16, a16, st16)), g16 = jit(jax.value_and_grad(
      functools.partial(loss_fn, model16), has_aux=True))(
          v["params"], v["batch_stats"], X, LABELS, jax.random.key(1))
  (loss32, (l32, _, _)), _ = trained("hcfcn")
  assert l16.dtype == jnp.float32 and all(a.dtype == jnp.float32 for a in a16)
  assert np.all(np.isfinite(l16)) and np.isfinite(float(loss16))
  rel = np.abs(l16 - l32).max() / np.abs(l32).max()
  assert rel < 0.25, rel
  assert abs(float(loss16) - float(loss32)) < 0.05 * abs(float(loss32))
  np.testing.assert_allclose(a16[0].sum(-1), 1.0, atol=1e-5)
  assert all(v.dtype == jnp.float32 for v in jax.tree.leaves(st16))
  assert all(g.dtype == jnp.float32 and np.all(np.isfinite(g))
             for g in jax.tree.leaves(g16))


def _count(tree, keep=lambda path: True):
  flat = jax.tree_util.tree_flatten_with_path(tree)[0]
  return sum(int(np.prod(x.shape)) for p, x in flat
             if keep(jax.tree_util.keystr(p)))


def test_full_size_parameter_counts():
  c = default.get_config().model
  c.num_classes = 8
  shapes = models.init_shapes(c, image_size=64)
  enc = shapes["params"]["encoder"]
  # torchvision resnet34 up to layer3 has 8,170,304 parameters; the 3x3
  # shortcuts add 8 * (64 * 128 + 128 * 256) = 327,680, the offset convs
  # 2 * (27 * 9 * 64 + 27) + 2 * (27 * 9 * 128 + 27) = 93,420.
  assert _count(enc, lambda p: "offset_conv" not in p) == 8_170_304 + 327_680
  assert _count(enc, lambda p: "offset_conv" in p) == 93_420
  assert enc["layer3_5"]["conv2"]["kernel"].shape == (3, 3, 256, 256)
  assert "layer3_6" not in enc and "layer4_0" not in enc
  head = shapes["params"]["head"]
  assert head["conv"]["kernel"].shape == (3, 3, 256, 64)
  assert head["classifier"]["kernel"].shape == (1, 1, 64, 8)
  for s in (4, 8):
    assert shapes["params"][f"proj_fine{s}"]["kernel"].shape[-1] == 48
    assert "bias" not in shapes["params"][f"proj_coarse{s}"]
  c.name = "fcn16s_vgg"
  vgg = models.init_shapes(c, image_size=64)["params"]
  # torchvision vgg16 without classifier.6: 134,260,544 parameters.
  assert _count(vgg, lambda p: "score" not in p and "upscore" not in p) == (
      134_260_544)
  c.name = "unet"
  unet = models.init_shapes(c, image_size=64)["params"]
  assert [unet[f"decoder{i}"]["conv2"]["kernel"].shape[-1]
          for i in range(4)] == [128, 64, 32, 16]
  assert unet["decoder0"]["conv1"]["kernel"].shape[2] == 256 + 128


def test_summary_table():
  text = models.summary(tiny_config("hcfcn"), image_size=32)
  assert "encoder" in text and "head" in text and "proj_fine4" in text
  n = models.param_count(models.init_shapes(tiny_config("hcfcn"), 32)["params"])
  assert f"{n:,} parameters" in text


def test_default_assignment_options_add_no_parameters():
  shapes = models.init_shapes(tiny_config("hcfcn"), image_size=32)["params"]
  assert sorted(shapes) == ["encoder", "head", "proj_coarse4", "proj_coarse8",
                            "proj_fine4", "proj_fine8"]
  assert models.hcfcn.assign_parameters(shapes) == {}


@pytest.mark.slow  # 7 s on 2 cores (compiles or runs more).
def test_hcformer_similarity_with_parent_bias_in_bfloat16():
  b = bundle("hcfcn", similarity="hcformer", tau=0.05, parent_bias=1.0,
             dtype="bfloat16")
  params = b.variables["params"]
  assert all(v.dtype == jnp.float32 for v in jax.tree.leaves(b.variables))
  for s in (4, 8):
    assert params[f"log_tau{s}"].shape == ()
    np.testing.assert_allclose(params[f"log_tau{s}"], np.log(0.05), rtol=1e-6)
    np.testing.assert_array_equal(params[f"parent_bias{s}"], 1.0)
    assert sorted(params[f"proj_fine{s}_norm"]) == ["bias", "scale"]
    assert params[f"proj_coarse{s}_norm"]["scale"].shape == (
        params[f"proj_coarse{s}"]["kernel"].shape[2],)
  learned = models.hcfcn.assign_parameters(params)
  np.testing.assert_allclose(learned["a4_tau"], 0.05, rtol=1e-6)
  np.testing.assert_allclose(learned["a8_parent_bias"], 1.0)
  (loss, (logits, assignments, _)), grads = b.grads(X, LABELS)
  assert logits.dtype == jnp.float32 and np.isfinite(float(loss))
  for a in assignments:
    assert a.dtype == jnp.float32
    np.testing.assert_allclose(a.sum(-1), 1.0, atol=1e-5)
  flat = jax.tree_util.tree_flatten_with_path(grads)[0]
  dead = [jax.tree_util.keystr(p) for p, g in flat
          if g.dtype != jnp.float32 or not np.all(np.isfinite(g))
          or not np.any(g)]
  assert not dead, f"no gradient reaches {dead}"
  assert all(grads[f"log_tau{s}"] != 0 and grads[f"parent_bias{s}"] != 0
             for s in (4, 8))


@pytest.mark.slow  # 28 s on 2 cores (compiles or runs more).
def test_zero_init_starts_uniform_and_the_parent_bias_makes_a_soft_grid():
  b = bundle("hcfcn", similarity="dot", tau=0.07, assign_init="zero",
             parent_bias=2.0)
  params = b.variables["params"]
  assert not np.any(params["proj_fine4"]["kernel"])
  assert np.any(params["proj_coarse4"]["kernel"])
  _, assignments = b.eval_fn(b.variables, X)
  for a in assignments:
    n = superpixels.valid_mask(a.shape[1] // 2, a.shape[2] // 2).sum(-1)
    parent = np.exp(2.0) / (np.exp(2.0) + n - 1)
    np.testing.assert_allclose(
        a[..., 4], np.broadcast_to(parent, a.shape[:3]), rtol=1e-6)
  # Without the bias the assignments are uniform: entropy log 9 inside.
  plain = models.create_model(tiny_config("hcfcn", similarity="dot",
                                          assign_init="zero"))
  variables = plain.init(jax.random.key(0), X[:1])
  _, (a4, _) = jit(functools.partial(plain.apply, train=False))(variables,
                                                                 X[:1])
  np.testing.assert_allclose(a4[0, 2:-2, 2:-2], 1.0 / 9.0, rtol=1e-6)
  # At the first step only the fine projections of the similarity path get
  # gradient: the coarse ones see a zero fine projection.
  _, grads = b.grads(X, LABELS)
  for s in (4, 8):
    assert np.any(grads[f"proj_fine{s}"]["kernel"])
    assert not np.any(grads[f"proj_coarse{s}"]["kernel"])
    assert grads[f"parent_bias{s}"] != 0


@pytest.mark.parametrize("overrides,match", [
    (dict(similarity="l2"), "model.similarity"),
    (dict(assign_init="ones"), "model.assign_init"),
    (dict(similarity="cosine", assign_init="zero"), "needs model.similarity"),
    (dict(similarity="hcformer", tau=2.0), "learnable temperature"),
    (dict(tau=0.0), "model.tau"),
    (dict(parent_bias=float("nan")), "model.parent_bias"),
])
def test_invalid_assignment_options(overrides, match):
  with pytest.raises(ValueError, match=match):
    models.create_model(tiny_config("hcfcn", **overrides))
