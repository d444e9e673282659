"""Coarse labels -> dense masks (`--mode=refine`), in one package.

  fills.py    the fills, one pure function each (free ones and the model's)
  scores.py   masks scored against fine labels, and the coarse-only score
              (a held-out ring of labelled pixels) that chooses a fill
  inputs.py   what refine reads: a prepared split, or images + coarse PNGs
  driver.py   `run`: predict, fill, score, choose, write (staged)
  report.py   the report, CSV, staged output, Markdown tables
  figures.py  the refine table and figure from refine runs (a CLI)

This file imports nothing, so the command line can name the fills without
starting JAX or TensorFlow.
"""

# Every fill `--refine_method` can name (`fills` has one function each);
# `auto` picks one of them by the coarse-only score (`scores`). The free
# ones need no model.
FREE_FILLS = ("nearest_labelled", "slic_propagation", "slic_then_nearest")
MODEL_FILLS = ("model", "constrained", "superpixel", "superpixel_constrained",
               "slic_sure_constrained")
FILLS = FREE_FILLS + MODEL_FILLS
