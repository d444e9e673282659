"""Metric logging: TensorBoard event files and `workdir/metrics.jsonl`.

Only JAX process 0 writes; on the other processes the writer is a no-op, so
the training loop can call it unconditionally. `metrics.jsonl` holds one JSON
object per line, each with `step` and `split` (train, validation, ...), so a
run can be analysed without TensorBoard, e.g.
`[json.loads(l) for l in open('metrics.jsonl')]`. Both go through the
workdir's path abstraction (`workdir.path`), so gs:// workdirs work: the
jsonl file is rewritten whole (atomically) at each write, since object
stores cannot append.
"""

import json
import logging
import math
import re
from typing import Any, List, Mapping

from absl import flags
from absl import logging as absl_logging
import jax
import numpy as np

from coarseseg_jax import filesystem

METRICS_FILE = "metrics.jsonl"


def tag_name(name: str) -> str:
  """A TensorBoard tag: characters other than [A-Za-z0-9_./-] become _."""
  return re.sub(r"[^A-Za-z0-9_./-]", "_", name)


def _scalar(value):
  value = float(value)
  return value if math.isfinite(value) else None


class MetricWriter:
  """Writes scalars to TensorBoard (`workdir/tensorboard/<split>`) and jsonl."""

  def __init__(self, workdir: str):
    self._active = jax.process_index() == 0
    self._tb = {}
    self._root = filesystem.path(workdir)
    self._lines: List[str] = []
    if self._active:
      self._root.mkdir(parents=True, exist_ok=True)
      jsonl = self._root / METRICS_FILE
      if jsonl.exists():
        self._lines = [l for l in jsonl.read_text().splitlines() if l.strip()]

  def drop_after(self, step: int) -> None:
    """Forgets the records after `step` (a resumed run logs them again)."""
    if not self._active:
      return
    kept = [l for l in self._lines if json.loads(l)["step"] <= step]
    if len(kept) != len(self._lines):
      self._lines = kept
      filesystem.write_bytes(self._root / METRICS_FILE,
                              "".join(l + "\n" for l in kept))

  def _writer(self, split: str):
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    if split not in self._tb:
      self._tb[split] = tf.summary.create_file_writer(
          str(self._root / "tensorboard" / split))
    return self._tb[split]

  def write(self, step: int, split: str, scalars: Mapping[str, float]) -> None:
    if not self._active:
      return
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    writer = self._writer(split)
    record = {"step": int(step), "split": split}
    with writer.as_default():
      for name, value in scalars.items():
        record[name] = _scalar(value)
        if record[name] is not None:
          tf.summary.scalar(tag_name(name), record[name], step=int(step))
    writer.flush()
    self._lines.append(json.dumps(record))
    filesystem.write_bytes(self._root / METRICS_FILE,
                            "\n".join(self._lines) + "\n")

  def write_images(self, step: int, split: str, images: Mapping[str, Any]
                   ) -> None:
    """Images (name -> (H, W, 3) float in [0, 1]) to TensorBoard."""
    if not self._active or not images:
      return
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    writer = self._writer(split)
    with writer.as_default():
      for name, image in images.items():
        tf.summary.image(tag_name(name), np.asarray(image, np.float32)[None],
                         step=int(step))
    writer.flush()

  def close(self) -> None:
    if self._active:
      for w in self._tb.values():
        w.close()


def read_metrics(workdir: str) -> list:
  """The records of `workdir/metrics.jsonl`, in step order (empty if none).

  A resumed run logs the steps after its last checkpoint a second time; the
  last record of each (split, step) wins.
  """
  path = filesystem.path(workdir) / METRICS_FILE
  if not path.exists():
    return []
  records = {}
  for line in path.read_text().splitlines():
    if line.strip():
      r = json.loads(line)
      records[(r["split"], r["step"])] = r
  return sorted(records.values(), key=lambda r: (r["step"], r["split"]))


def setup_logging() -> None:
  """Command-line logging: the project's own progress at INFO on stderr;
  libraries logging through absl (orbax, tfds) at WARNING unless --verbosity
  is given. Call after absl has parsed the flags."""
  if not flags.FLAGS["verbosity"].present:
    absl_logging.set_verbosity(absl_logging.WARNING)
  project_log = logging.getLogger("coarseseg_jax")
  if not project_log.handlers:
    handler = logging.StreamHandler()
    handler.setFormatter(
        logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
    project_log.addHandler(handler)
  project_log.setLevel(logging.INFO)
  project_log.propagate = False
