"""config_validation.resolve: the config checked and completed once, at the
entry points, on a copy."""

import os
import re

import pytest

import coarseseg_jax
from coarseseg_jax import config_validation
from coarseseg_jax import errors
from coarseseg_jax.configs import suim
from coarseseg_jax.configs import synthetic

# The entry points, and the experiments' runner, which checks each run's
# config where it trains it.
# experiments/chain.py: commands.sh's step that resolves a sweep run's
# config as the experiments' command line does, to compare it key for key.
ENTRY_POINTS = {"main.py", "experiments/__main__.py", "experiments/runner.py",
                "experiments/chain.py", "datasets/prepare.py",
                "refine/figures.py", "quickstart.py"}


def test_resolve_completes_a_locked_copy_and_leaves_the_config_alone():
  config = synthetic.get_config()
  assert config.model.num_classes is None
  resolved = config_validation.resolve(config)
  assert config.model.num_classes is None  # Not changed.
  assert resolved.num_classes == resolved.config.model.num_classes == 6
  assert resolved.builder.name == "coarseseg_synthetic"
  with pytest.raises(AttributeError):
    resolved.config.data.new_key = 1  # Locked: no new keys below.
  with pytest.raises(ValueError, match="use="):
    config_validation.resolve(config, "everything")


def test_what_a_mode_reads_decides_what_is_required(tmp_path):
  """SUIM with no prepared copy and no manual_dir: an error for a run that
  reads its splits, none for predicting images with a known class count."""
  config = suim.get_config()
  config.data.data_dir = str(tmp_path)
  config.model.num_classes = 8
  for use in ("train", "split"):
    with pytest.raises(errors.ConfigError, match="manual_dir is not set"):
      config_validation.resolve(config, use)
  assert config_validation.resolve(config, "images").num_classes == 8
  # Only training checks that the train batch divides over the devices.
  config.train.batch_size = 3
  with pytest.raises(errors.ConfigError, match="train.batch_size=3"):
    config_validation.resolve(config, "train")
  config_validation.resolve(config, "images")


def test_only_the_entry_points_check_the_config():
  """Nothing below an entry point checks or completes the config again."""
  root = os.path.dirname(coarseseg_jax.__file__)
  callers = set()
  for folder, _, files in os.walk(root):
    for name in files:
      if not name.endswith(".py") or name == "config_validation.py":
        continue
      path = os.path.join(folder, name)
      with open(path) as f:
        text = f.read()
      rel = os.path.relpath(path, root)
      if re.search(r"(?<!`)config_validation\.(resolve|_\w+)\(", text):
        callers.add(rel)
      assert not re.search(r"config_validation\.(validate|resolve_)", text), rel
  assert callers == ENTRY_POINTS


def test_a_workdir_config_keeps_its_recorded_refined_source(tmp_path):
  """eval / predict / refine read a workdir's config.json: the refined
  labels' source it records stays, even where they are not (another
  machine); only training reads the refine report again."""
  config = synthetic.get_config()
  config.data.data_dir = str(tmp_path)
  config.data.train_labels = "refined"
  config.data.refined_dir = str(tmp_path / "gone")
  config.data.refined_from = "wd step 5 min_confidence 0.0 fill auto"
  for use in ("split", "images"):
    assert config_validation.resolve(config, use).config.data.refined_from == (
        config.data.refined_from)
  with pytest.raises(errors.ConfigError, match="refine_train.json"):
    config_validation.resolve(config, "train")
