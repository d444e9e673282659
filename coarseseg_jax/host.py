"""The machine a figure was measured on, for tables and benchmark records.

Imports neither JAX nor PyTorch at import (the PyTorch reference benchmark
uses `processor`); `machine` imports JAX when called.
"""

import os
import platform

_VECTOR = (("avx512f", "AVX-512"), ("avx2", "AVX2"))  # Widest first.


def processor(cpuinfo: str = "/proc/cpuinfo") -> str:
  """The processor as Linux names it, with its family, model and the widest
  vector extension XLA:CPU can use, e.g. "AMD EPYC (x86_64, family 25, model
  1, AVX2)": 2-core hosts that all call themselves "AMD EPYC" took 0.8 s and
  2.1 s per quick-start step and trained to different numbers, so "x86_64"
  does not say which one measured a figure. `platform` where `cpuinfo` is
  missing (macOS, Windows)."""
  arch = platform.machine()
  try:
    with open(cpuinfo) as f:
      first = f.read().split("\n\n", 1)[0]  # The first processor's block.
  except OSError:
    return platform.processor() or arch
  info = {}
  for line in first.splitlines():
    key, _, value = line.partition(":")
    info.setdefault(key.strip(), value.strip())
  flags = set(info.get("flags", "").split())
  details = [arch] + [f"{k.split()[-1]} {info[k]}" for k in
                      ("cpu family", "model") if info.get(k)]
  details += [name for flag, name in _VECTOR if flag in flags][:1]
  name = info.get("model name") or platform.processor() or arch
  return f"{name} ({', '.join(details)})"


def cores() -> str:
  """The CPU cores this process may use, e.g. "2 CPU cores", or "1 of 2 CPU
  cores" when it is pinned to fewer than the machine has (`taskset`)."""
  total = os.cpu_count() or 1
  try:
    usable = len(os.sched_getaffinity(0))
  except AttributeError:  # macOS, Windows.
    usable = total
  return (f"{usable} of {total} CPU cores" if usable < total
          else f"{total} CPU cores")


def machine() -> str:
  """Processor, cores, JAX version and backend: the machine line of tables,
  and the one each run's results.json records (`train.py`), e.g. "AMD EPYC
  (x86_64, family 25, model 1, AVX2), 2 CPU cores, JAX 0.10.2 on cpu"."""
  import jax  # pylint: disable=g-import-not-at-top
  return (f"{processor()}, {cores()}, JAX {jax.__version__} on "
          f"{jax.devices()[0].platform}")
