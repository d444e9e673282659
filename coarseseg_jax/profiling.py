"""Measuring the program itself: XLA compilations and profiler traces.

`CompilationCounter` counts, while it is active (jax.monitoring's events):
  * `count`: XLA programs built, compiled or loaded from JAX's persistent
    compilation cache;
  * `traces`: per jitted function name, how often it was traced, i.e. built
    for a new input shape (cache loads included), e.g. to check that
    evaluating images of many sizes traces the eval step once, not once per
    size.

`StepProfiler` writes a jax.profiler trace of a few training steps
(`config.train.profile_steps`).
"""

import collections
import logging
from typing import Dict, List

import jax

COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"
TRACE_EVENT = "/jax/core/compile/jaxpr_trace_duration"
CACHE_HIT_EVENT = "/jax/compilation_cache/cache_hits"


class CompilationCounter:
  """Context manager counting programs and traces (see module docstring)."""

  def __init__(self):
    self.durations: List[float] = []  # Backend compilations, seconds.
    self.cache_hits = 0
    self.traces: Dict[str, int] = collections.Counter()

  def _on_duration(self, event: str, duration: float, **kwargs) -> None:
    if event == COMPILE_EVENT:
      self.durations.append(duration)
    elif event == TRACE_EVENT:
      self.traces[str(kwargs.get("fun_name"))] += 1

  def _on_event(self, event: str, **kwargs) -> None:
    del kwargs
    if event == CACHE_HIT_EVENT:
      self.cache_hits += 1

  def __enter__(self) -> "CompilationCounter":
    jax.monitoring.register_event_duration_secs_listener(self._on_duration)
    jax.monitoring.register_event_listener(self._on_event)
    return self

  def __exit__(self, *exc) -> None:
    jax.monitoring.unregister_event_duration_listener(self._on_duration)
    jax.monitoring.unregister_event_listener(self._on_event)

  @property
  def count(self) -> int:
    return len(self.durations) + self.cache_hits

  @property
  def seconds(self) -> float:
    return float(sum(self.durations))


class StepProfiler:
  """A jax.profiler trace of `num_steps` training steps, after `WARMUP`
  steps (the compilation), into `log_dir` (TensorBoard's Profile tab opens
  it); JAX process 0 only, once per process. Call `before_step` and
  `after_step(state)` around every step."""
  WARMUP = 3
  done = False  # Class-wide: one trace per process.

  def __init__(self, log_dir: str, num_steps: int):
    self.num_steps = int(num_steps or 0) if jax.process_index() == 0 else 0
    self.seen, self.log_dir = 0, log_dir

  def _active(self) -> bool:
    return bool(self.num_steps) and not StepProfiler.done

  def before_step(self) -> None:
    if self._active() and self.seen == self.WARMUP:
      jax.profiler.start_trace(self.log_dir)
      logging.getLogger(__name__).info("profiling %d steps into %s",
                                       self.num_steps, self.log_dir)

  def after_step(self, state) -> None:
    self.seen += 1
    if self._active() and self.seen == self.WARMUP + self.num_steps:
      jax.block_until_ready(state)
      jax.profiler.stop_trace()
      StepProfiler.done = True
