"""XLA flags for the CPU backend, set before JAX initialises its backends.

Imported first by `coarseseg_jax.main`. The flags only concern XLA's CPU
compiler, so they change nothing on GPU or TPU. Flags the user already put in
`XLA_FLAGS` win: a flag is only added when its name is absent.
"""

import os

# name -> value. See benchmarks/README.md for the measurements behind each.
CPU_FLAGS = {}


def apply(flags=None) -> str:
  """Adds `flags` (default CPU_FLAGS) to the XLA_FLAGS environment variable."""
  flags = CPU_FLAGS if flags is None else flags
  current = os.environ.get("XLA_FLAGS", "")
  extra = [f"--{name}={value}" for name, value in flags.items()
           if f"--{name}=" not in current]
  if extra:
    os.environ["XLA_FLAGS"] = " ".join([current] + extra).strip()
  return os.environ.get("XLA_FLAGS", "")


apply()
