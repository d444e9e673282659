"""`--mode=refine`: coarse labels filled into dense masks, with a report.

`run` refines a prepared split (`refine.inputs`: its stored coarse labels,
fine labels and SLIC maps) or a folder of images with coarse label PNGs
matched by stem (SLIC maps computed with the config's SLIC settings). Every
fill of `refine.fills` runs on every image, on the coarse label and on its
held-out version (`refine.scores.holdout`); the method written out is
`method` (`--refine_method`), or with `auto` the fill of the best
coarse-only score (held-out ring's `band_correct`, pooled over the images).

Output: `<stem>.png` (uint8 class ids at the image's size, the chosen fill),
`<stem>_overlay.png` as `--mode=predict` writes, `fills/<method>/<stem>.png`
for every fill, and the report of `refine.report` (`refine_<split>.json`
and `.csv`). Inputs are checked before anything is computed; everything is
written into a temporary folder beside `output_dir` and moved into place at
the end, so an error leaves no partial output. Local output folders only;
one process.
"""

import functools
import logging
import os
import shutil
from typing import Dict, Iterator, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image
import tqdm

from coarseseg_jax import evaluate
from coarseseg_jax import predictor
from coarseseg_jax.datasets import items
from coarseseg_jax.labels import IGNORE_LABEL
from coarseseg_jax.refine import fills
from coarseseg_jax.refine import inputs
from coarseseg_jax.refine import report as report_lib
from coarseseg_jax.refine import scores

log = logging.getLogger(__name__)
METHODS = fills.FILLS
AUTO = "auto"


class _Predicted:
  """One image's model outputs at its size: probs (H, W, C); the learned-
  superpixel votes of its coarse label and of the held-out one."""

  def __init__(self, probs, votes, heard, held_votes, held_heard):
    self.probs, self.votes, self.heard = probs, votes, heard
    self.held_votes, self.held_heard = held_votes, held_heard


@functools.lru_cache(maxsize=8)
def _jitted_outputs(model, num_classes: int):
  """The jitted (probabilities, label votes) of a batch: one per model in a
  process, so refines of equal models (the experiments' seeds) reuse it."""
  predict = evaluate.make_predict_fn(model)

  @jax.jit
  def outputs(variables, images, coarse, held):
    _, logits, assignments = predict(variables, images)
    probs = jax.nn.softmax(logits.astype(jnp.float32), axis=-1)
    if assignments:
      votes, heard = fills.label_votes(coarse, assignments, num_classes)
      held_votes, held_heard = fills.label_votes(held, assignments,
                                                 num_classes)
    else:  # No learned superpixels: no votes, nothing heard.
      votes = held_votes = jnp.zeros_like(probs)
      heard = held_heard = jnp.zeros(probs.shape[:3], jnp.float32)
    return probs, votes, heard, held_votes, held_heard

  return outputs


def _predicted(examples: Iterator[Tuple[inputs.Example, np.ndarray]],
               restored: predictor.Restored, batch_size: int,
               num_classes: int
               ) -> Iterator[Tuple[inputs.Example, np.ndarray, _Predicted]]:
  """(example, held-out coarse, outputs), batched by bucket shape as
  `--mode=predict` does (`predictor.batched`)."""
  outputs = _jitted_outputs(restored.model, num_classes)
  arrays = (((ex, held), (ex.image.astype(np.float32) / 255.0,
                          ex.coarse.astype(np.int32), held.astype(np.int32)))
            for ex, held in examples)
  for (ex, held), out in predictor.batched(
      arrays, outputs, restored.variables, batch_size,
      (0.0, IGNORE_LABEL, IGNORE_LABEL)):
    yield ex, held, _Predicted(*out)


def _figures(masks: Dict[str, np.ndarray], coarse: np.ndarray,
             truth: np.ndarray, num_classes: int
             ) -> Dict[str, Dict[str, np.ndarray]]:
  """`scores.mask_metrics` of each method's mask refined from `coarse`,
  against `truth`, in a canvas of the bucket shape (so images of many sizes
  compile once per bucket)."""
  h, w = coarse.shape
  hb, wb = predictor.bucket_shape(h, w)
  pad = lambda x: np.pad(x, ((0, hb - h), (0, wb - w)),
                         constant_values=IGNORE_LABEL)[None]
  fn = scores.mask_metrics_fn(num_classes)
  size = np.array([[h, w]], np.int32)
  out = {}
  for method, mask in masks.items():
    figures = jax.device_get(fn(pad(mask), pad(coarse), pad(truth),
                                size=size))
    out[method] = {k: np.asarray(v)[0] for k, v in figures.items()}
  return out


def run(resolved, workdir: str, output_dir: str, *,
        split: Optional[str] = None,
        input_dir: Optional[str] = None, coarse_dir: Optional[str] = None,
        min_confidence: float = 0.0, method: str = AUTO) -> dict:
  """`--mode=refine`: refines a prepared `split`, or the images of
  `input_dir` with the coarse PNGs of `coarse_dir` (see the module
  docstring), writing `method`'s fill (one of `METHODS`, or `auto`).
  `resolved`: `config_validation.resolve(config, "split")` (a split) or
  `"images"` (a folder), for the workdir's config. Returns the report
  (`report.Accumulator.summarize`, with `chosen`), with
  `line`, the one-line summary."""
  if method != AUTO and method not in METHODS:
    raise ValueError(f"refine method {method!r}: use auto or one of "
                     f"{', '.join(METHODS)}.")
  config, num_classes = resolved.config, resolved.num_classes
  if input_dir is not None:
    name = "folder"
    pairs = inputs.folder_pairs(input_dir, coarse_dir, num_classes)
    count, class_names = len(pairs), None
    examples = inputs.folder_examples(config, pairs)
    images = lambda: ((stem, items.read_image(path))
                      for stem, path, _ in pairs)
    source = {"input_dir": input_dir, "coarse_dir": coarse_dir}
  else:
    name = split
    count, examples, class_names = inputs.split_examples(resolved, split)
    images = lambda: ((ex.stem, ex.image)
                      for ex in inputs.split_examples(resolved, split)[1])
    source = {"split": split, "dataset": config.data.dataset}
  with report_lib.staged_output(output_dir) as tmp:
    for m in METHODS:
      os.makedirs(os.path.join(tmp, "fills", m))
    restored = predictor.restore(config, workdir)
    acc = report_lib.Accumulator(METHODS, num_classes, class_names)
    held_acc = report_lib.Accumulator(METHODS, num_classes, class_names)
    with_held = ((ex, scores.holdout(ex.coarse)[0]) for ex in examples)
    for ex, held, out in tqdm.tqdm(
        _predicted(with_held, restored, int(config.data.eval_batch_size),
                   num_classes),
        total=count, desc="refine", unit="image", mininterval=2):
      masks = fills.all_fills(ex.coarse, ex.slic, out.probs, out.votes,
                              out.heard, min_confidence=min_confidence)
      for m, mask in masks.items():
        with open(os.path.join(tmp, "fills", m, f"{ex.stem}.png"), "wb") as f:
          f.write(items.encode_png(mask))
      acc.add(ex.stem, ex.source, ex.coarse, ex.fine, masks,
              None if ex.fine is None else _figures(masks, ex.coarse, ex.fine,
                                                    num_classes))
      held_masks = fills.all_fills(held, ex.slic, out.probs, out.held_votes,
                                   out.held_heard,
                                   min_confidence=min_confidence)
      held_acc.add(ex.stem, ex.source, held, ex.coarse, held_masks,
                   _figures(held_masks, held, ex.coarse, num_classes))
    kwargs = dict(name=name, workdir=workdir, step=restored.step,
                  source=source, min_confidence=min_confidence)
    report = acc.summarize(**kwargs)
    coarse_only = held_acc.summarize(**kwargs)
    chosen, why = (scores.choose(coarse_only["methods"]) if method == AUTO
                   else (method, "--refine_method"))
    report["chosen"] = {"method": chosen, "why": why,
                        "refine_method": method}
    if report["fine_labels"]:
      report["chosen"]["agreement"] = scores.agreement(coarse_only["methods"],
                                                report["methods"])
    report["coarse_only"] = {
        "what": "each fill of the held-out coarse label (a ring of labelled "
                "pixels beside the band hidden: half the band's width, at "
                "most half a region's depth), scored on the ring against the "
                "coarse labels",
        "labelled_share": coarse_only["labelled_share"],
        "methods": coarse_only["methods"]}
    for stem, image in images():  # The chosen fill and its overlay.
      path = os.path.join(tmp, f"{stem}.png")
      shutil.copyfile(os.path.join(tmp, "fills", chosen, f"{stem}.png"), path)
      with Image.open(path) as im:
        mask = np.asarray(im)
      with open(os.path.join(tmp, f"{stem}_overlay.png"), "wb") as f:
        f.write(predictor.overlay_png(image, mask, num_classes))
    report_lib.write(report, acc.rows(), tmp, name)
  report["line"] = report_lib.summary_line(report, output_dir)
  return report
