"""SLIC superpixel maps computed once at dataset preparation.

Every example stores `skimage.segmentation.slic` of its image, relabelled to
consecutive ids 0..K-1. By default there is one segment per 16 x 16 block,
as many as the model's stride-16 cells. The maps feed `losses.slic_map_loss`,
the SLIC label-propagation baseline and the comparison of learned superpixels
with SLIC's. `parallel_map` spreads preparation over processes.
"""

import collections
import concurrent.futures
import itertools
import multiprocessing
import os
import signal
from typing import Any, Callable, Iterator, Optional, Sequence

import numpy as np
from skimage import segmentation
import tqdm


def num_segments(height: int, width: int, block: int = 16) -> int:
  """One SLIC segment per `block` x `block` pixels (at least one)."""
  return max(1, int(round(height * width / float(block * block))))


def relabel_consecutive(segments: np.ndarray) -> np.ndarray:
  """Maps the ids of a segment map to 0..K-1 (order of the original ids)."""
  _, inverse = np.unique(segments, return_inverse=True)
  return inverse.reshape(segments.shape).astype(np.int32)


def slic_map(image: np.ndarray, *, block: int = 16, compactness: float = 10.0,
             sigma: float = 1.0) -> np.ndarray:
  """SLIC superpixels of one RGB image.

  Args:
    image: (H, W, 3) uint8 RGB image.
    block: one segment is requested per `block` x `block` pixels.
    compactness: SLIC's colour/space trade-off (higher = squarer segments).
    sigma: width of the Gaussian smoothing SLIC applies first.

  Returns:
    (H, W) int32 segment ids, consecutive from 0.
  """
  image = np.asarray(image)
  if image.ndim != 3 or image.shape[-1] != 3:
    raise ValueError(f"expected an (H, W, 3) image, got shape {image.shape}.")
  h, w = image.shape[:2]
  segments = segmentation.slic(
      image, n_segments=num_segments(h, w, block), compactness=compactness,
      sigma=sigma, start_label=0, channel_axis=-1, convert2lab=True)
  return relabel_consecutive(segments)


def is_consecutive(segments: np.ndarray) -> bool:
  """True if the ids of `segments` are exactly 0..K-1."""
  ids = np.unique(segments)
  return bool(ids.size) and ids[0] == 0 and ids[-1] == ids.size - 1


def default_num_workers() -> int:
  """All cores this process may use."""
  try:
    return len(os.sched_getaffinity(0))
  except AttributeError:  # Not on Linux.
    return os.cpu_count() or 1


def _ignore_sigint():
  signal.signal(signal.SIGINT, signal.SIG_IGN)


def make_pool(num_workers: int) -> concurrent.futures.ProcessPoolExecutor:
  """A pool of spawned processes (safe with TensorFlow/JAX loaded).

  Workers ignore Ctrl-C: the parent handles it, cancels what has not
  started and shuts the pool down, without a traceback from every worker.
  """
  return concurrent.futures.ProcessPoolExecutor(
      num_workers, mp_context=multiprocessing.get_context("spawn"),
      initializer=_ignore_sigint)


def parallel_map(fn: Callable[[Any], Any], items: Sequence[Any],
                 num_workers: Optional[int] = None, desc: Optional[str] = None,
                 executor: Optional[concurrent.futures.Executor] = None
                 ) -> Iterator[Any]:
  """`map(fn, items)` over spawned processes, in order, with a progress bar.

  `num_workers=1` (and no `executor`) runs in-process. At most a few items
  per worker are in flight, so memory stays bounded however slowly the
  results are consumed. Worker exceptions (e.g. DatasetError) are re-raised
  here unchanged, and the items not yet started are cancelled.
  """
  items = list(items)
  n = min(num_workers or default_num_workers(), len(items))
  bar = tqdm.tqdm(total=len(items), desc=desc, unit="img", mininterval=2.0,
                  leave=False)
  own = None
  pending = collections.deque()
  try:
    if n <= 1 and executor is None:
      for item in items:
        yield fn(item)
        bar.update()
      return
    if executor is None:
      executor = own = make_pool(n)
    remaining = iter(items)
    for item in itertools.islice(remaining, 4 * max(n, 1)):
      pending.append(executor.submit(fn, item))
    while pending:
      result = pending.popleft().result()
      for item in itertools.islice(remaining, 1):
        pending.append(executor.submit(fn, item))
      yield result
      bar.update()
  finally:
    for future in pending:
      future.cancel()
    bar.close()
    if own is not None:
      own.shutdown(wait=True, cancel_futures=True)
