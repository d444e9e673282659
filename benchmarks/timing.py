"""Round-robin step timing shared by train_step.py and torch_reference.py.

Imports neither JAX nor PyTorch, so the PyTorch reference stays JAX-free.
"""

import time
from typing import Callable, Dict, Tuple

import numpy as np


def time_round_robin(variants: Dict[str, Tuple[Callable[[], object], dict]],
                     steps: int, batch_size: int) -> Dict[str, dict]:
  """Times `steps` steps of each variant, one step of each in turn.

  Args:
    variants: key -> (step, row); `step()` runs one step and returns once it
      has finished (the caller blocks on the device), `row` describes it.
    steps: timed steps per variant.
    batch_size: images per step, for images/s.

  Interleaving spreads drifts of the machine (other load, clock, memory)
  over all variants alike, so their ratios (the regularizer's overhead) hold
  even when absolute times wander. Returns {key: row + step_s (median of the
  timed steps) + cpu_s (median process CPU time of a step, all threads:
  on a shared machine less sensitive to other load than step_s) +
  images_per_s}.
  """
  times = {key: [] for key in variants}
  cpu = {key: [] for key in variants}
  for _ in range(steps):
    for key, (step, _) in variants.items():
      t0, c0 = time.perf_counter(), time.process_time()
      step()
      times[key].append(time.perf_counter() - t0)
      cpu[key].append(time.process_time() - c0)
  rows = {}
  for key, (_, row) in variants.items():
    step_s = float(np.median(times[key]))
    rows[key] = dict(row, step_s=round(step_s, 6),
                     cpu_s=round(float(np.median(cpu[key])), 4),
                     images_per_s=round(batch_size / step_s, 2))
  return rows
