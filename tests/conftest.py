"""Test-wide setup: 8 fake CPU devices (for sharding tests), quiet TensorFlow.

The environment must be set before JAX or TensorFlow are first imported, which
is why it lives here, at the top of conftest.
"""

import os

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
