"""Interruptions: SIGTERM (preemption) and SIGINT (Ctrl-C) as a stop request.

While a `StopRequest` is active, SIGTERM and SIGINT do not kill the process:
they set a flag that the training loop checks after every step (and the
evaluator after every batch). The loop then finishes the checkpoint being
written, saves the current step, and raises `Interrupted`, which `main`
turns into one line (the step saved, how to resume) and the conventional
exit status 128 + signal (143 for SIGTERM, 130 for SIGINT). An interruption
therefore costs at most the step in flight. A second signal while the first
is being handled exits at once (status 128 + signal), as users expect of a
second Ctrl-C; the checkpoints already finished stay valid.

Multi-host runs: every host must stop at the same step. JAX's distributed
runtime (`jax.distributed.initialize`) has a preemption service that catches
SIGTERM on any host and agrees on a step (`multihost_utils.
reached_preemption_sync_point`, what orbax's preemption handling uses); this
class asks it every step and leaves SIGTERM to it. SIGINT is handled per
host.
"""

import logging
import signal
import threading
from typing import Optional

import jax
from jax.experimental import multihost_utils

from coarseseg_jax import errors

log = logging.getLogger(__name__)


class EvalStopped(Exception):
  """An evaluation stopped early because a stop was requested."""


class StopRequest:
  """Context manager: SIGTERM / SIGINT -> `requested(step)` (module doc)."""

  def __init__(self):
    self.signum: Optional[int] = None
    self._previous = {}

  def _signals(self):
    if jax.process_count() > 1:  # SIGTERM: JAX's preemption service.
      return (signal.SIGINT,)
    return (signal.SIGTERM, signal.SIGINT)

  def _handle(self, signum, frame) -> None:
    del frame
    if self.signum is not None:  # A second signal: stop now.
      raise SystemExit(128 + signum)
    self.signum = signum
    log.warning("%s received: finishing the step in flight and saving a "
                "checkpoint (send it again to stop at once).",
                signal.Signals(signum).name)

  def __enter__(self) -> "StopRequest":
    if threading.current_thread() is threading.main_thread():
      for sig in self._signals():
        self._previous[sig] = signal.signal(sig, self._handle)
    return self

  def __exit__(self, *exc) -> None:
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)
    self._previous = {}

  def requested(self, step: Optional[int] = None) -> bool:
    """Whether to stop now (all hosts agree when `step` is given)."""
    if jax.process_count() > 1 and step is not None:
      try:
        if multihost_utils.reached_preemption_sync_point(step):
          self.signum = self.signum or signal.SIGTERM
          return True
      except RuntimeError:  # The preemption service is off.
        pass
    return self.signum is not None

  def interrupted(self, step: Optional[int], saved: bool) -> errors.Interrupted:
    """The exception that ends the run (see errors.Interrupted)."""
    return errors.Interrupted(self.signum or signal.SIGTERM, step, saved)
