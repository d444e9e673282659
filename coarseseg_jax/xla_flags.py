"""XLA flags for the CPU backend, set before JAX initialises its backends.

Imported first by `coarseseg_jax.main` and the benchmarks. The flags are only
added when no GPU or TPU plugin for JAX is installed (an XLA build that does
not know a flag aborts), and flags the user already put in `XLA_FLAGS` win: a
flag is only added when its name is absent. Set `COARSESEG_NO_XLA_FLAGS=1` to
add none.

`xla_cpu_experimental_ynn_fusion_type=-individual_convolution` keeps XLA:CPU
from handing each convolution to its YNNPACK fusion path on its own, which on
jax 0.10 made the batch-8 256x256 HCFCN-16 train step 1.23 s -> 1.03 s on the
2-core development machine; without the deformable convs it took 0.83 s with
the flag and 0.98 s with YNNPACK fusions off entirely. The other XLA:CPU
options tried (oneDNN, YNNPACK convolutions, vector width, schedulers) did
not make it faster, and it remains 1.14-1.22x a careful PyTorch eager step:
XLA:CPU's convolution kernels (Eigen's) are 1.04-2.5x oneDNN's, 1.28x summed
over the encoder's (benchmarks/README.md, issue 17).
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


apply()
