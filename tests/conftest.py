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
