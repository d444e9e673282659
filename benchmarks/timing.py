"""The benchmarks' one timer: every script in benchmarks/ times with this.

Imports neither JAX nor PyTorch, so the PyTorch reference stays JAX-free. A
call that starts asynchronous work must wait for it itself (JAX:
``jax.block_until_ready``), or the time is that of the dispatch.

* `time_round_robin`: train steps of several variants, one step of each in
  turn: median step time, median process CPU time, images/s.
* `median_seconds`: the same for plain calls (ops, layers, kernels):
  {key: median seconds}; one key is a sequential timing.
* `mean_seconds`: a block of consecutive calls timed as a whole: seconds
  per call (throughput, or steps under a profiler trace).
* `timed`: one call, on the wall clock or the process CPU clock:
  (result, seconds); compile times.
* `Stopwatch`: seconds since it started (a long run, a polled subprocess).
* `load_trace`: the events of the newest profiler trace under a folder
  (`jax.profiler.trace`'s), for the scripts that time ops in a trace.
"""

import glob
import gzip
import json
import os
import time
from typing import Callable, Dict, Tuple, TypeVar

import numpy as np

T = TypeVar("T")
CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}


class Stopwatch:
  """Seconds since it was created (``clock``: 'wall' or 'cpu')."""

  def __init__(self, clock: str = "wall"):
    self._clock = CLOCKS[clock]
    self._start = self._clock()

  def seconds(self) -> float:
    return self._clock() - self._start


def timed(call: Callable[[], T], clock: str = "wall") -> Tuple[T, float]:
  """(call(), its seconds on ``clock``: 'wall' or 'cpu', the process CPU
  time of all threads, which other processes on the machine do not add to)."""
  watch = Stopwatch(clock)
  result = call()
  return result, watch.seconds()


def mean_seconds(call: Callable[[], object], count: int,
                 warmup: int = 0) -> float:
  """Wall seconds per call of `count` consecutive calls timed as one block,
  after `warmup` untimed calls (throughput: 1 / this)."""
  for _ in range(warmup):
    call()
  watch = Stopwatch()
  for _ in range(count):
    call()
  return watch.seconds() / count


def _round_robin(calls: Dict[str, Callable[[], object]], rounds: int,
                 warmup: int = 0):
  """Per key, the wall and process-CPU seconds of each of `rounds` calls,
  one call of each key in turn (after `warmup` calls of each, untimed)."""
  for call in calls.values():
    for _ in range(warmup):
      call()
  wall = {key: [] for key in calls}
  cpu = {key: [] for key in calls}
  for _ in range(rounds):
    for key, call in calls.items():
      c0 = time.process_time()
      t0 = time.perf_counter()
      call()
      t1 = time.perf_counter()
      cpu[key].append(time.process_time() - c0)
      wall[key].append(t1 - t0)
  return wall, cpu


def median_seconds(calls: Dict[str, Callable[[], object]], repeats: int,
                   warmup: int = 0) -> Dict[str, float]:
  """Median wall seconds of each call, the calls interleaved (one of each per
  round, `repeats` rounds, after `warmup` calls of each), so that a burst of
  load from other processes hits all of them alike."""
  wall, _ = _round_robin(calls, repeats, warmup)
  return {key: float(np.median(t)) for key, t in wall.items()}


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
  wall, cpu = _round_robin({key: step for key, (step, _) in variants.items()},
                           steps)
  rows = {}
  for key, (_, row) in variants.items():
    step_s = float(np.median(wall[key]))
    rows[key] = dict(row, step_s=round(step_s, 6),
                     cpu_s=round(float(np.median(cpu[key])), 4),
                     images_per_s=round(batch_size / step_s, 2))
  return rows


def load_trace(log_dir: str) -> list:
  """The trace events of the newest `*.trace.json.gz` or
  `*perfetto_trace.json.gz` under `log_dir` (RuntimeError if none)."""
  paths = [p for pattern in ("*.trace.json.gz", "*perfetto_trace.json.gz")
           for p in glob.glob(os.path.join(log_dir, "**", pattern),
                              recursive=True)]
  if not paths:
    raise RuntimeError(f"no trace written under {log_dir}")
  with gzip.open(max(paths, key=os.path.getmtime)) as f:
    data = json.load(f)
  return data["traceEvents"] if isinstance(data, dict) else data
