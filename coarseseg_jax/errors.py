"""User-facing errors: `main` prints them as one line, without a traceback.

Anything else that escapes is a bug and keeps its traceback.
"""


class Error(Exception):
  """Base of the errors caused by input the user can fix."""


class ConfigError(Error, ValueError):
  """An invalid configuration value."""


class DatasetError(Error):
  """Bad or missing dataset files; the message names the file."""


class NonFiniteLossError(Error, RuntimeError):
  """The training loss became NaN or infinite."""


class CheckpointError(Error):
  """A missing checkpoint, or input files for prediction."""


USER_ERRORS = (Error,)
