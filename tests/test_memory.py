"""Memory before a run and the compilation cache (issue 26, parts 2 and 3).

`memory.train_step_memory` compiles the train step on abstract inputs and
reads XLA's memory analysis; `--mode=summary` prints it (run by
test_readme's synthetic journey, at the README's size and the tiny one). The
compilation cache (`compilation_cache`) lives in
`<workdir>/compilation_cache` by default, so a resumed run and an eval load
what the first run compiled.
"""

import os
import re
import subprocess
import sys

import jax
from jax.sharding import Mesh
import numpy as np
import pytest

from coarseseg_jax import compilation_cache
from coarseseg_jax import errors
from coarseseg_jax import losses
from coarseseg_jax import memory
from coarseseg_jax import models
from coarseseg_jax import step as step_lib
from coarseseg_jax import workdir as workdir_lib
from coarseseg_jax.configs import default

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HIT = "Persistent compilation cache hit for 'jit_"


def _tiny(batch_size=8, size=64):
  config = default.get_config()
  config.model.num_classes = 6
  config.model.stage_blocks = (1, 1, 1)
  config.model.width = config.model.head_channels = 8
  config.model.sim_features = 8
  config.data.crop_size = size
  config.train.batch_size = batch_size
  return config


def _env(**extra):
  """The subprocess environment: one CPU device, no compilation cache but
  the run's own."""
  env = dict(os.environ, XLA_FLAGS="", **extra)
  env.pop("JAX_COMPILATION_CACHE_DIR", None)
  return env


# ------------------------------------------------------------- memory ----


@pytest.mark.slow
def test_train_step_memory_over_eight_devices():
  """Per device: the replicated state (parameters, Adam's two moments,
  batch statistics) counts whole in the arguments, the batch an eighth (the
  image and the label: kappa = 0, so the step does not read `slic`); the
  donated state is reused for the new one; the total is the sum the
  docstring gives."""
  config = _tiny()
  assert config.train.kappa == 0
  mesh = Mesh(np.array(jax.devices()[:8]), ("data",))
  m = memory.train_step_memory(config, mesh)
  assert (m.num_devices, m.global_batch, m.per_device_batch) == (8, 8, 1)
  assert (m.backend, m.image_size, m.dtype) == (jax.default_backend(), 64,
                                                "float32")
  state, batch = memory.abstract_train_inputs(config, mesh)
  nbytes = lambda x: x.size * x.dtype.itemsize
  state_bytes = sum(nbytes(x) for x in jax.tree.leaves(state))
  params = models.param_count(state.params)
  assert state_bytes >= 3 * 4 * params
  share = (nbytes(batch["image"]) + nbytes(batch["label"])) // 8
  assert m.argument_bytes == state_bytes + share
  assert state_bytes - 64 <= m.alias_bytes <= state_bytes
  assert m.output_bytes >= m.alias_bytes
  assert m.temp_bytes > 0
  assert m.total_bytes == (m.argument_bytes + m.output_bytes - m.alias_bytes
                           + m.temp_bytes)


def test_format_memory_lines():
  m = memory.StepMemory(
      backend="gpu", device_kind="Tesla T4", num_devices=2, global_batch=8,
      per_device_batch=4, image_size=512, dtype="bfloat16",
      argument_bytes=3 * memory.MiB, output_bytes=2 * memory.MiB,
      alias_bytes=memory.MiB, temp_bytes=10 * memory.MiB,
      generated_code_bytes=0, compile_seconds=1.25)
  text = memory.format_memory(m)
  lines = text.splitlines()
  assert "gpu backend, 2 devices of kind 'Tesla T4'" in lines[0]
  assert "bfloat16, 512x512 crops; compiled in 1.2 s" in lines[0]
  values = {l.split()[0]: float(l.split()[1]) for l in lines[1:6]}
  assert values == {"arguments": 3.0, "outputs": 2.0, "aliased": 1.0,
                    "temporaries": 10.0, "total": 14.0}
  assert lines[-1] == "batch: global 8, per device 4 (2 devices)"


@pytest.mark.parametrize("change,message", [
    (dict(batch_size=6), "config.train.batch_size=6 must be a positive "
                         "multiple of the number of devices (8)"),
    (dict(size=72), "config.data.crop_size=72 must be a positive multiple"),
])
def test_memory_bad_config_is_one_line(change, message):
  config = _tiny(**change)
  mesh = Mesh(np.array(jax.devices()[:8]), ("data",))
  with pytest.raises(errors.ConfigError, match=re.escape(message)):
    memory.abstract_train_inputs(config, mesh)


def test_memory_without_num_classes_or_with_a_bad_model_is_one_line():
  config = _tiny()
  config.model.num_classes = None
  with pytest.raises(errors.ConfigError, match="num_classes is not set"):
    memory.abstract_train_inputs(config)
  config = _tiny()
  config.model.name = "resnet"
  with pytest.raises(errors.ConfigError, match="config.model: unknown"):
    memory.abstract_train_inputs(config)


def test_make_train_step_binds_the_configs_loss_settings():
  config = _tiny()
  config.train.lmbda, config.train.kappa = 0.25, 0.5
  config.train.class_weights = (1.0, 2.0, 1.0, 1.0, 1.0, 1.0)
  settings = step_lib.make_train_step(config).__wrapped__.keywords["settings"]
  assert settings.lmbda == 0.25 and settings.kappa == 0.5
  assert settings.num_segments == config.data.slic_num_segments
  np.testing.assert_array_equal(settings.class_weights,
                                np.float32([1, 2, 1, 1, 1, 1]))
  assert hash(settings) == hash(losses.LossSettings.from_config(config))


# -------------------------------------------------- compilation cache ----


def test_cache_dir_resolution():
  env = {}
  assert compilation_cache.cache_dir("workdir", "/runs/a", env) == (
      "/runs/a/compilation_cache")
  assert compilation_cache.cache_dir(None, "/runs/a", env) == (
      "/runs/a/compilation_cache")
  assert compilation_cache.cache_dir("workdir", "gs://b/run", env) == (
      "gs://b/run/compilation_cache")
  assert compilation_cache.cache_dir("", "/runs/a", env) is None
  assert compilation_cache.cache_dir("workdir", None, env) is None
  assert compilation_cache.cache_dir("/shared/c", "/runs/a", env) == (
      "/shared/c")
  assert compilation_cache.cache_dir("rel/c", "/runs/a", env) == (
      os.path.abspath("rel/c"))
  env = {"JAX_COMPILATION_CACHE_DIR": "/env/c"}
  assert compilation_cache.cache_dir("workdir", "/runs/a", env) == "/env/c"
  assert compilation_cache.cache_dir("/shared/c", "/runs/a", env) == (
      "/shared/c")
  assert compilation_cache.cache_dir("", "/runs/a", env) is None
  with pytest.raises(errors.ConfigError, match="must be a string"):
    compilation_cache.cache_dir(3, "/runs/a", env)


def test_cache_key_may_change_and_old_config_json_resumes():
  """The key changes nothing about a run: a config.json written before it
  existed, or with another value, is no difference."""
  config = default.get_config()
  assert config.compilation_cache_dir == compilation_cache.WORKDIR
  new = workdir_lib.config_as_json(config)
  old = dict(new)
  del old["compilation_cache_dir"]
  assert workdir_lib.differences(old, new) == []
  assert workdir_lib.differences(dict(new, compilation_cache_dir=""),
                                 new) == []


def test_setup_points_jax_at_the_cache(tmp_path, monkeypatch):
  """setup() sets JAX's cache directory and thresholds; '' switches it off;
  a summary leaves a workdir that does not exist alone."""
  previous = (jax.config.jax_compilation_cache_dir,
              jax.config.jax_enable_compilation_cache,
              jax.config.jax_persistent_cache_min_compile_time_secs,
              jax.config.jax_persistent_cache_min_entry_size_bytes)
  monkeypatch.delenv("JAX_COMPILATION_CACHE_DIR", raising=False)
  config = default.get_config()
  try:
    got = compilation_cache.setup(config, str(tmp_path / "run"), "train")
    assert got == str(tmp_path / "run" / "compilation_cache")
    assert jax.config.jax_compilation_cache_dir == got
    assert jax.config.jax_enable_compilation_cache
    assert jax.config.jax_persistent_cache_min_compile_time_secs == (
        compilation_cache.MIN_COMPILE_TIME_SECS)
    assert compilation_cache.setup(config, str(tmp_path / "no"),
                                   "summary") is None
    assert not jax.config.jax_enable_compilation_cache
    assert not (tmp_path / "no").exists()
    config.compilation_cache_dir = ""
    assert compilation_cache.setup(config, str(tmp_path / "run")) is None
    (tmp_path / "file").write_text("x")
    config.compilation_cache_dir = str(tmp_path / "file")
    with pytest.raises(errors.ConfigError, match="is a file"):
      compilation_cache.setup(config, str(tmp_path / "run"))
  finally:
    from jax.experimental.compilation_cache import compilation_cache as cc  # pylint: disable=g-import-not-at-top
    for name, value in zip(
        ("jax_compilation_cache_dir", "jax_enable_compilation_cache",
         "jax_persistent_cache_min_compile_time_secs",
         "jax_persistent_cache_min_entry_size_bytes"), previous):
      jax.config.update(name, value)
    cc.reset_cache()


@pytest.mark.slow
def test_resumed_run_and_eval_load_the_compiled_programs(tmp_path,
                                                        tiny_data_dir):
  """A tiny run fills <workdir>/compilation_cache; resuming it and
  evaluating it load the train and eval steps from there (cache hits, none
  of its programs stored again)."""
  workdir = str(tmp_path / "run")
  cache = os.path.join(workdir, compilation_cache.SUBDIR)
  env = _env(COARSESEG_TEST_DATA_DIR=str(tiny_data_dir),
             JAX_LOG_COMPILES="1")
  # FCN-16 without the regularizers: what is cached is the same (the train
  # and eval steps), it compiles in a fraction of HCFCN-16's time.
  train = [sys.executable, "-m", "coarseseg_jax.main",
           "--config=tests/tiny_config.py", f"--workdir={workdir}",
           "--config.model.name=fcn", "--config.train.lmbda=0",
           "--config.train.kappa=0"]

  def run(args):
    proc = subprocess.run(args, cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stderr

  first = run(train + ["--config.train.max_steps=2"])
  assert HIT not in first
  stored = set(os.listdir(cache))
  names = {n.rsplit("-", 2)[0] for n in stored if n.endswith("-cache")}
  assert {"jit_train_step", "jit_eval_step"} <= names, names
  resumed = run(train + ["--config.train.max_steps=4"])
  assert "Resumed from step 2" in resumed
  assert HIT + "train_step'" in resumed and HIT + "eval_step'" in resumed
  evaluated = run([sys.executable, "-m", "coarseseg_jax.main",
                   f"--workdir={workdir}", "--mode=eval"])
  assert HIT + "eval_step'" in evaluated
  # No program the first run stored was stored again. (A small program that
  # compiled under MIN_COMPILE_TIME_SECS the first time may cross it on a
  # busy machine and be stored now: that is no miss.)
  new = {n for n in set(os.listdir(cache)) - stored if n.endswith("-cache")}
  assert not {n for n in new if n.rsplit("-", 2)[0] in names}, new
