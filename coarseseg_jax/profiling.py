"""Measuring the program itself: XLA compilations (and, later, traces).

`CompilationCounter` counts, while it is active (jax.monitoring's events):
  * `count`: XLA programs built, compiled or loaded from JAX's persistent
    compilation cache;
  * `traces`: per jitted function name, how often it was traced, i.e. built
    for a new input shape (cache loads included), e.g. to check that
    evaluating images of many sizes traces the eval step once, not once per
    size.
"""

import collections
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
