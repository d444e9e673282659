"""Test-wide setup: 8 fake CPU devices (for sharding tests), quiet TensorFlow.

The environment must be set before JAX or TensorFlow are first imported, which
is why it lives here, at the top of conftest.
"""

import os

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# The CPU XLA flags of the command line (coarseseg_jax.main sets them), so
# in-process runs and the subprocesses they are compared with compile alike.
from coarseseg_jax import xla_flags  # pylint: disable=g-import-not-at-top,wrong-import-position,unused-import

# JAX's persistent compilation cache, shared by the tests of one machine (and
# the subprocesses they start): the many tiny end-to-end runs compile the same
# programs, which takes most of their time on CPU. Counting tests count cache
# loads as programs too (`profiling.CompilationCounter`).
import tempfile  # pylint: disable=g-import-not-at-top,wrong-import-position

os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(
    tempfile.gettempdir(), "coarseseg-tests-jax-cache"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")

# ------------------------------------------------------------------ fixtures
# The tests' shared helpers (tests/helpers.py) and fixtures. Test modules
# import helper modules (helpers, pipeline_fixtures, paper_fixtures) by name,
# never another test module.
import pytest  # pylint: disable=g-import-not-at-top,wrong-import-position

import helpers  # pylint: disable=g-import-not-at-top,wrong-import-position


@pytest.fixture(scope="session")
def shared_tmp_path(tmp_path_factory):
  """A folder shared by every test process of this run: under xdist the
  workers' basetemps are its subfolders (without xdist, the basetemp). For
  `helpers.run_once`."""
  root = tmp_path_factory.getbasetemp()
  if os.environ.get("PYTEST_XDIST_WORKER"):
    root = root.parent
  return root


@pytest.fixture(scope="session")
def tiny_data_dir(shared_tmp_path):
  """The tiny config's synthetic dataset, prepared once per test run (the
  xdist workers share it). Read-only: a test that changes the data
  parameters prepares its own copy."""
  return helpers.run_once(shared_tmp_path, "tiny_data",
                          helpers.prepare_tiny_data)


@pytest.fixture
def tiny_config(tiny_data_dir):
  """A fresh tests/tiny_config.py config reading `tiny_data_dir`."""
  return helpers.tiny_config(tiny_data_dir)


def pytest_collection_modifyitems(items):
  """The slow (end-to-end) tests first, in their order, then the rest: under
  xdist the longest units start first and the many short ones fill in at the
  end, so no worker is left running a 3-minute test while the other idles."""
  items.sort(key=lambda item: item.get_closest_marker("slow") is None)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
  """xdist (`-n`) without an explicit --dist: as `load`, but the tests of one
  class are one unit, run by one worker, in order, and first (the biggest
  units go first). test_train.py's TestKillResume is such a class: its
  staged fixtures run once while the other workers run the rest. (xdist's
  own `--dist loadgroup` would do it by marks, but with pytest 9.2 it no
  longer groups: pytest-dev/pytest-xdist#1386.)"""
  if config.getvalue("dist") != "load" or any(
      a.startswith("--dist") for a in config.invocation_params.args):
    return None
  from xdist.scheduler import LoadScopeScheduling  # pylint: disable=g-import-not-at-top

  class ClassScheduling(LoadScopeScheduling):

    def _split_scope(self, nodeid):
      parts = nodeid.split("[", 1)[0].split("::")
      return "::".join(parts[:2]) if len(parts) > 2 else nodeid

  return ClassScheduling(config, log)
