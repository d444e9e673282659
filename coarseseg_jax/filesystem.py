"""One path layer for every file the project reads or writes.

Local paths and URLs such as gs://bucket/run alike go through
`etils.epath` (`path`), which reaches remote file systems through
TensorFlow's gfile, as TFDS and orbax do, so a TPU pod can train into a
bucket. Whole files are written atomically (`write_bytes`: a temporary name,
then a rename), so nothing half-written is ever read back. What a workdir
holds (config.json, its lock) is `workdir`'s concern.
"""

import json
import os
import uuid
from typing import Any, Union

from etils import epath

PathLike = Union[str, os.PathLike]


def is_url(p: PathLike) -> bool:
  """Whether `p` names a non-local file system (gs://..., s3://...)."""
  return "://" in os.fspath(p)


def path(p: PathLike) -> epath.Path:
  """`p` as an epath.Path: local paths made absolute, URLs left as they are."""
  p = os.fspath(p)
  if not is_url(p):
    p = os.path.abspath(os.path.expanduser(p))
  return epath.Path(p)


def write_bytes(p: PathLike, data: Union[bytes, str]) -> None:
  """Writes a whole file atomically: to `<name>.<unique>.tmp` (its own, so
  that processes writing the same file never share one), then renamed."""
  p = path(p)
  p.parent.mkdir(parents=True, exist_ok=True)
  tmp = p.parent / f"{p.name}.{uuid.uuid4().hex[:12]}.tmp"
  if isinstance(data, str):
    tmp.write_text(data)
  else:
    tmp.write_bytes(data)
  tmp.replace(p)


def write_json(p: PathLike, obj: Any) -> None:
  write_bytes(p, json.dumps(obj, indent=1, default=str) + "\n")


def read_json(p: PathLike) -> Any:
  return json.loads(path(p).read_text())
