"""The paper datasets' configs run the authors' code; its options one by one.

The numbers of paper mode against the authors' code are checked in
tests/test_authors_parity.py; here: which config runs what, the options'
pure functions and old config.json files (scoring an authors' checkpoint from
the command line: tests/test_readme.py).
"""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from coarseseg_jax import evaluate
from coarseseg_jax import losses
from coarseseg_jax import models
from coarseseg_jax import superpixels
from coarseseg_jax import workdir as workdir_lib
from coarseseg_jax.configs import cityscapes
from coarseseg_jax.configs import default
from coarseseg_jax.configs import folder
from coarseseg_jax.configs import pannuke
from coarseseg_jax.configs import suim
from coarseseg_jax.configs import synthetic

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize("module", [suim, pannuke, cityscapes])
def test_paper_configs_run_the_authors_code_and_improved_is_ours(module):
  paper = module.get_config()
  assert default.departures(paper) == []
  assert paper.data.eval_center_crop == paper.data.crop_size
  assert paper.model.similarity == "dot" and paper.model.tau == 0.07
  improved = module.get_config("improved")
  assert set(default.departures(improved)) >= {
      "model.similarity", "model.out_of_grid", "model.input_norm",
      "model.weight_init", "model.deform_bias", "train.slic_resize",
      "train.validation_mode"}
  assert improved.data.eval_center_crop is None
  # Everything else (data, schedule, lambda) is the same experiment.
  for key in ("dataset", "crop_size"):
    assert improved.data[key] == paper.data[key]
  assert improved.train.lmbda == paper.train.lmbda


def _keys(config, prefix=""):
  """Every dotted key of a config, builder_kwargs' entries included."""
  for key, value in config.items():
    if hasattr(value, "items"):
      yield from _keys(value, f"{prefix}{key}.")
    else:
      yield prefix + key


ALL_CONFIGS = [suim, pannuke, cityscapes, synthetic, folder]


@pytest.mark.parametrize("module", ALL_CONFIGS)
@pytest.mark.parametrize("arg", ["paper", "improved"])
def test_every_config_key_is_classified(module, arg):
  """A key added to a config without its authors' value (or "no
  counterpart in their code") in configs/default.py fails here."""
  config = module.get_config(arg)
  with_value = (set(default.AUTHORS_CODE) | set(default.AUTHORS_PROTOCOL)
                | set(default.AUTHORS_SHARED) | set(default.AUTHORS_DERIVED))
  no_counterpart = set(default.NO_COUNTERPART_KEYS)
  assert not with_value & no_counterpart
  assert not (with_value | no_counterpart) & set(default.PER_DATASET)
  per_dataset = default.DATASET_AUTHORS.get(config.data.dataset)
  unclassified = []
  for key in _keys(config):
    if key in with_value or key in no_counterpart:
      continue
    if key == "data.dataset" or (per_dataset is not None
                                 and key in per_dataset):
      continue
    if per_dataset is None and (key in default.PER_DATASET
                                or key.startswith("data.builder_kwargs.")):
      continue  # Not a thesis dataset: the config's own values.
    unclassified.append(key)
  assert not unclassified, (
      f"{unclassified}: classify them in configs/default.py (AUTHORS_* with "
      "the authors' value, or NO_COUNTERPART_KEYS with why) and in the "
      "README's differences table.")
  # No stale entries: every classified key is a key of the configs.
  every = set(_keys(default.get_config()))
  for m in ALL_CONFIGS:
    every |= set(_keys(m.get_config()))
  assert (with_value | no_counterpart) - every == set()
  for dataset_values in default.DATASET_AUTHORS.values():
    assert set(dataset_values) - every == set()


def _other(value):
  """A value of the same kind that is not `value`."""
  if isinstance(value, bool):
    return not value
  if value is None:
    return 3
  if isinstance(value, (int, float)):
    return value + 1
  if isinstance(value, tuple):
    return tuple(v * 2 + 1 for v in value)
  return f"{value}_other"


@pytest.mark.parametrize("module", [suim, cityscapes])
def test_departures_names_every_override_of_an_authors_value(module):
  """An empty `departures` means the authors' code, whatever overrides were
  given: each key with an authors' value, changed, is named."""
  paper = module.get_config()
  assert default.departures(paper) == []
  values = default.authors_values(paper)
  assert len(values) > 40
  for key in values:
    config = _changed(paper, key)
    # A new training crop also moves the authors' evaluation crop.
    assert default.departures(config) == [key] + (
        ["data.eval_center_crop"] if key == "data.crop_size" else []), key
  for key in default.NO_COUNTERPART_KEYS:  # These never depart.
    assert default.departures(_changed(paper, key)) == [], key


def _changed(config, key):
  """A copy of `config` with `key` (dotted) at `_other` of its value (as it
  is where the key is not in this config)."""
  config = ml_collections.ConfigDict(config.to_dict())
  parent, name = key.rsplit(".", 1) if "." in key else ("", key)
  node = config
  for part in filter(None, parent.split(".")):
    node = node[part]
  if name in node:
    with node.ignore_type():
      node[name] = _other(node[name])
  return config


def test_paper_mode_protocol_suim_skips_mismatched_pairs():
  """Paper mode: coarse selection, the authors' fine-tuning; SUIM leaves
  the size-mismatched pairs out (the thesis's 1290), :improved resizes."""
  for module in (suim, pannuke, cityscapes, synthetic, folder):
    paper = module.get_config("paper")
    assert paper.data.validation_labels == "coarse"
    assert paper.train.finetune and paper.train.finetune_rule == "authors"
    improved = module.get_config("improved")
    assert improved.data.validation_labels == "fine"
    assert not improved.train.finetune
    assert improved.train.finetune_rule == "project"
  assert suim.get_config().data.builder_kwargs.on_size_mismatch == "skip"
  assert suim.get_config(
      "improved").data.builder_kwargs.on_size_mismatch == "resize"


def test_cityscapes_paper_mode_keeps_gtcoarse_as_is():
  assert cityscapes.get_config().data.builder_kwargs.mask_conflicts is False
  assert cityscapes.get_config(
      "improved").data.builder_kwargs.mask_conflicts is True


@pytest.mark.parametrize("module", [synthetic, folder])
def test_own_data_configs_run_the_project_variant(module):
  assert default.departures(module.get_config())
  assert default.departures(module.get_config("paper")) == []


def test_unknown_config_argument_is_one_line():
  proc = subprocess.run(
      [sys.executable, "-m", "coarseseg_jax.main",
       "--config=configs/suim.py:papr", "--mode=summary"],
      cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 2
  assert "Traceback" not in proc.stderr
  assert proc.stderr.strip().splitlines()[-1].startswith(
      "error: the config file failed to load: ValueError: unknown config "
      "argument 'papr'")


def test_old_config_json_is_completed_with_the_values_it_ran():
  old = synthetic.get_config().to_dict()
  for key in ("similarity", "out_of_grid", "input_norm", "weight_init",
              "deform_bias"):
    del old["model"][key]
  del old["train"]["slic_resize"], old["train"]["validation_mode"]
  config = workdir_lib.config_from_json(json.loads(json.dumps(old)))
  assert config.model.similarity == "dot"  # Runs before the option: dot.
  assert (config.model.out_of_grid, config.model.input_norm,
          config.model.weight_init, config.model.deform_bias) == (
              "mask", "imagenet", "he_fan_out", False)
  assert (config.train.slic_resize, config.train.validation_mode) == (
      "block_mean", "eval")
  models.create_model(dict_to_model(config))


def dict_to_model(config):
  config.model.num_classes = 6
  return config.model


def test_out_of_grid_zero_is_a_softmax_over_all_nine():
  rng = np.random.default_rng(0)
  fine = jnp.asarray(rng.standard_normal((1, 8, 8, 4)), jnp.float32)
  coarse = jnp.asarray(rng.standard_normal((1, 4, 4, 4)), jnp.float32)
  masked = superpixels.assign(fine, coarse, tau=0.5)
  zero = superpixels.assign(fine, coarse, tau=0.5, out_of_grid="zero")
  np.testing.assert_allclose(jnp.sum(zero, -1), 1.0, rtol=1e-6)
  outside = ~superpixels.valid_mask(4, 4)
  assert float(jnp.min(jnp.where(outside, zero[0], 1.0))) > 0  # Logit 0.
  np.testing.assert_array_equal(np.asarray(masked[0])[outside], 0.0)
  # Pixels whose 9 candidates all lie in the grid: the same softmax.
  assert not outside[2:6, 2:6].any()
  np.testing.assert_allclose(np.asarray(zero[0, 2:6, 2:6]),
                             np.asarray(masked[0, 2:6, 2:6]), rtol=1e-6)
  with pytest.raises(ValueError, match="out_of_grid"):
    superpixels.assign(fine, coarse, out_of_grid="pad")


def test_torch_bilinear_resize():
  x = jnp.asarray(np.random.default_rng(1).random((2, 16, 12, 3)),
                  jnp.float32)
  down = losses.torch_bilinear_resize(x, (4, 3))
  # Downsampling by 4 reads the central 2 x 2 pixels of each 4 x 4 block.
  blocks = np.asarray(x).reshape(2, 4, 4, 3, 4, 3)[:, :, 1:3, :, 1:3]
  np.testing.assert_allclose(down, blocks.mean((2, 4)), rtol=1e-6)
  # Upsampling agrees with jax.image.resize (half-pixel centres, both).
  up = losses.torch_bilinear_resize(x, (32, 24))
  np.testing.assert_allclose(
      up, jax.image.resize(x, (2, 32, 24, 3), "bilinear"), atol=1e-6)


@pytest.mark.slow  # 7 s on 2 cores (compiles or runs more).
def test_slic_loss_options():
  rng = np.random.default_rng(2)
  image = jnp.asarray(rng.random((1, 32, 32, 3)), jnp.float32)
  logits = [jnp.asarray(rng.standard_normal((1, 8, 8, 9)), jnp.float32),
            jnp.asarray(rng.standard_normal((1, 4, 4, 9)), jnp.float32)]
  a = [jax.nn.softmax(l, -1) for l in logits]
  base = losses.slic_loss(image, a, 0.0)
  pos_cell = losses.slic_loss(image, a, 1.0) - base
  pos_sq = losses.slic_loss(image, a, 1.0, position_norm="stride_squared") - base
  np.testing.assert_allclose(pos_cell, 16 * pos_sq, rtol=1e-4)  # 64 / 4.
  assert abs(float(losses.slic_loss(image, a, 0.0, resize="bilinear") - base)
             ) > 1e-3
  with pytest.raises(ValueError, match="resize"):
    losses.slic_loss(image, a, 0.0, resize="area")


@pytest.mark.slow  # 16 s on 2 cores (compiles or runs more).
def test_validation_in_train_mode_uses_batch_statistics():
  config = default.authors_code(default.get_config())
  m = config.model
  m.num_classes, m.width, m.stage_blocks = 3, 8, (1, 1, 1)
  m.head_channels, m.sim_features, m.dropout = 8, 8, 0.0
  model = models.create_model(m)
  images = jnp.asarray(np.random.default_rng(3).random((2, 32, 32, 3)),
                       jnp.float32)
  variables = model.init({"params": jax.random.key(0)}, images)
  variables = {**variables, "batch_stats": jax.tree.map(
      lambda v: v + 3.0, variables["batch_stats"])}
  _, logits_eval, _ = evaluate.make_predict_fn(model)(variables, images)
  _, logits_train, _ = evaluate.make_predict_fn(model, True)(variables, images)
  (want, _), _ = model.apply(variables, images, train=True,
                             mutable=["batch_stats"])
  np.testing.assert_allclose(logits_train, want, rtol=1e-5, atol=1e-6)
  assert float(jnp.max(jnp.abs(logits_train - logits_eval))) > 1e-2
