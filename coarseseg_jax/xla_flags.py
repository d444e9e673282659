"""Backend settings made before JAX and TensorFlow start: XLA's CPU flags.

Imported first by the entry points (`main`, `experiments`) and the
benchmarks. The flags are only added when no GPU or TPU plugin for JAX is
installed (an XLA build that does not know a flag aborts), and flags the user
already put in `XLA_FLAGS` win: a flag is only added when its name is absent.
Set `COARSESEG_NO_XLA_FLAGS=1` to add none. TensorFlow's C++ INFO logging is
turned off (`TF_CPP_MIN_LOG_LEVEL=1` unless set): the input pipeline's
TensorFlow would otherwise print to the terminal of every command.

`xla_cpu_experimental_ynn_fusion_type=-individual_convolution` keeps XLA:CPU
from handing each convolution to its YNNPACK fusion path on its own, which
makes the HCFCN-16 train step faster on the CPU; the other XLA:CPU options
tried did not (measurements: benchmarks/README.md, "Findings (dated)").
"""

import importlib.util
import os

# name -> value.
CPU_FLAGS = {"xla_cpu_experimental_ynn_fusion_type": "-individual_convolution"}
_ACCELERATOR_PLUGINS = ("jax_cuda12_plugin", "jax_cuda13_plugin",
                        "jax_rocm60_plugin", "jax_rocm7_plugin", "libtpu")


def accelerator_plugin_installed() -> bool:
  return any(importlib.util.find_spec(name) is not None
             for name in _ACCELERATOR_PLUGINS)


def apply(flags=None) -> str:
  """Adds `flags` (default CPU_FLAGS) to the XLA_FLAGS environment variable."""
  if os.environ.get("COARSESEG_NO_XLA_FLAGS"):
    return os.environ.get("XLA_FLAGS", "")
  if flags is None:
    platforms = os.environ.get("JAX_PLATFORMS", "")
    cpu_only = platforms == "cpu" or (not platforms and
                                      not accelerator_plugin_installed())
    flags = CPU_FLAGS if cpu_only else {}
  current = os.environ.get("XLA_FLAGS", "")
  extra = [f"--{name}={value}" for name, value in flags.items()
           if f"--{name}=" not in current]
  if extra:
    os.environ["XLA_FLAGS"] = " ".join([current] + extra).strip()
  return os.environ.get("XLA_FLAGS", "")


os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")  # TensorFlow's C++ INFO.
apply()
