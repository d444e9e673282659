"""A run on a non-local file system writes nothing to local disk.

gs:// cannot be reached offline, so the test uses TensorFlow's in-memory
file system (`ram://`), registered with etils.epath the way epath registers
gs:// (the same TensorFlow gfile backend). Every path the code handles then
goes through the workdir's path abstraction, TFDS (which uses epath too) or
TensorBoard (TensorFlow): the workdir, the data_dir, the prediction input and
output folders are all on `ram://`. (The dataset is prepared on local disk
and copied there: TensorFlow's ram:// cannot rename a directory, the last
step of a TFDS preparation.)

Orbax cannot run on `ram://`: it writes arrays with TensorStore, whose GCS
driver it picks for gs:// and its local-file driver for anything else. So
`checkpoints.Checkpointer` is replaced here by an in-memory stand-in that
records the directory orbax would get; the test checks that it is the URL,
unchanged (the original bug made it `./gs:/bucket/...`). Orbax itself is
tested on local disk in test_train.py.
"""

import os

from etils.epath import backend as epath_backend
from etils.epath import gpath
from etils.epath import register
import jax
import numpy as np
import pytest
import tensorflow as tf

from coarseseg_jax import checkpoints
from coarseseg_jax import config_validation
from coarseseg_jax import evaluate
from coarseseg_jax import filesystem
from coarseseg_jax import predictor
from coarseseg_jax import train

import helpers  # pylint: disable=g-bad-import-order

ROOT = helpers.ROOT


@pytest.fixture
def ram_fs(monkeypatch):
  """epath understands ram:// (TensorFlow's in-memory file system)."""
  monkeypatch.setattr(gpath, "_URI_PREFIXES", gpath._URI_PREFIXES + ("ram://",))
  monkeypatch.setattr(gpath, "_URI_SCHEMES", gpath._URI_SCHEMES | {"ram"})
  monkeypatch.setitem(gpath._URI_MAP_ROOT, "ram://", "/ram/")
  monkeypatch.setitem(gpath._PREFIX_TO_BACKEND, "ram", epath_backend.tf_backend)
  monkeypatch.setitem(register._URI_PREFIXES_TO_CLS, "ram://",
                      gpath.PosixGPath)


class MemoryCheckpointer:
  """The interface of checkpoints.Checkpointer, in memory (see docstring)."""
  stores = {}

  def __init__(self, directory, keep):
    self.directory = str(filesystem.path(directory))
    self.keep = keep
    self._steps = MemoryCheckpointer.stores.setdefault(self.directory, {})

  def latest_step(self):
    return max(self._steps) if self._steps else None

  def save(self, step, state, meta):
    self._steps[step] = (jax.device_get(state), dict(meta))
    for old in sorted(self._steps)[:-self.keep]:
      del self._steps[old]

  def restore(self, like_state, step=None):
    state, meta = self._steps[self.latest_step() if step is None else step]
    likes = jax.tree.leaves(like_state)
    leaves = [jax.device_put(x, like.sharding)
              for x, like in zip(jax.tree.leaves(state), likes)]
    return jax.tree.unflatten(jax.tree.structure(like_state), leaves), dict(
        meta)

  def restore_newest(self, make_like):
    step = self.latest_step()
    if step is None:
      return None
    state, meta = self.restore(make_like(self.read_meta(step)), step)
    return state, meta, step

  def read_meta(self, step=None):
    return dict(self._steps[self.latest_step() if step is None else step][1])

  def wait(self):
    pass

  def close(self):
    pass


def _ram_files(root):
  return {os.path.relpath(os.path.join(d, f), root)
          for d, _, files in tf.io.gfile.walk(root) for f in files}


def _copy_tree(src, dst):
  for d, _, files in tf.io.gfile.walk(src):
    target = os.path.join(dst, os.path.relpath(d, src))
    tf.io.gfile.makedirs(target)
    for f in files:
      tf.io.gfile.copy(os.path.join(d, f), os.path.join(target, f))


def test_workdir_urls_stay_urls():
  assert str(filesystem.path("gs://bucket/runs/cs")) == "gs://bucket/runs/cs"
  assert str(filesystem.path("gs://bucket/runs/cs") / "checkpoints") == (
      "gs://bucket/runs/cs/checkpoints")
  assert str(filesystem.path("runs/x")) == os.path.abspath("runs/x")


@pytest.mark.slow
def test_train_eval_predict_on_a_non_local_file_system(
    ram_fs, monkeypatch, tmp_path, tiny_data_dir):
  # The dataset is prepared locally (conftest's tiny_data_dir) and copied:
  # TensorFlow's ram:// cannot rename a directory, which TFDS does at the end
  # of a preparation (GCS can, object by object).
  _copy_tree(tiny_data_dir, "ram://bucket/data")
  monkeypatch.chdir(tmp_path)
  monkeypatch.setattr(checkpoints, "Checkpointer", MemoryCheckpointer)
  before = set(os.listdir(ROOT))
  config = helpers.tiny_config("ram://bucket/data")
  config.train.num_epochs = 1
  config.train.kappa = 0.0
  workdir = "ram://bucket/runs/tiny"
  resolved = config_validation.resolve(config)
  config = resolved.config
  results = train.train_and_evaluate(resolved, workdir)
  assert results["test"]["num_images"] == 4

  files = _ram_files(workdir)
  for name in ("config.json", "metrics.jsonl", "results.json",
               "figures/sample_0.png", "figures/curves.png"):
    assert name in files, (name, sorted(files))
  assert any(f.startswith("tensorboard/train/events") for f in files)
  assert any(f.startswith("tensorboard/validation/events") for f in files)
  assert not any(f.endswith(".tmp") for f in files)
  assert set(MemoryCheckpointer.stores) == {
      "ram://bucket/runs/tiny/checkpoints", "ram://bucket/runs/tiny/best"}

  # eval and predict read and write there too.
  evaluate.evaluate_checkpoint(config_validation.resolve(config, "split"),
                               workdir, "test")
  assert "eval_test.json" in _ram_files(workdir)
  rng = np.random.default_rng(0)
  for name, shape in (("a.png", (40, 56, 3)), ("b.jpg", (64, 70, 3))):
    image = rng.integers(0, 255, shape, np.uint8)
    encode = tf.io.encode_png if name.endswith("png") else tf.io.encode_jpeg
    tf.io.gfile.makedirs("ram://bucket/photos")
    with tf.io.gfile.GFile(f"ram://bucket/photos/{name}", "wb") as f:
      f.write(encode(image).numpy())
  report = predictor.predict_folder(config, workdir, "ram://bucket/photos",
                                    "ram://bucket/predictions")
  assert len(report.written) == 2 and not report.skipped
  with tf.io.gfile.GFile("ram://bucket/predictions/a.png", "rb") as f:
    assert tf.io.decode_png(f.read()).shape[:2] == (40, 56)

  # Nothing on local disk: not here, not in the repository.
  assert os.listdir(tmp_path) == []
  assert set(os.listdir(ROOT)) == before
