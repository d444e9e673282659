"""User-facing errors: `main` prints them as one line, without a traceback.

Anything else that escapes is a bug and keeps its traceback.
"""


class Error(Exception):
  """Base of the errors caused by input the user can fix."""


class ConfigError(Error, ValueError):
  """An invalid configuration value."""


class WorkdirInUse(ConfigError):
  """The workdir's lock is held by a live run (another process)."""


class DatasetError(Error):
  """Bad or missing dataset files; the message names the file."""


class NonFiniteLossError(Error, RuntimeError):
  """The training loss became NaN or infinite."""


class CheckpointError(Error):
  """A missing checkpoint, or input files for prediction."""


USER_ERRORS = (Error,)


class Interrupted(Error):
  """SIGTERM or SIGINT stopped the run (see `interruption.StopRequest`).

  Attributes:
    signum: the signal; the process should exit with 128 + signum.
    step: the step of the checkpoint saved, or None if none was needed.
  """

  def __init__(self, signum: int, step, saved: bool):
    import signal  # pylint: disable=g-import-not-at-top
    self.signum, self.step = int(signum), step
    name = signal.Signals(signum).name
    if saved:
      what = (f"interrupted by {name} at step {step}: checkpoint {step} is "
              "saved; run the same command to resume from it.")
    else:
      what = (f"interrupted by {name}; the checkpoints already written are "
              "kept: run the same command to resume.")
    super().__init__(what)

  @property
  def exit_status(self) -> int:
    return 128 + self.signum
