"""The four scikit-image photos the initialisation benchmarks share.

JAX- and torch-free, so both `authors_init.py` (torch) and
`paper_mode_init.py` (JAX) read the same images.
"""

import numpy as np

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket")


def load_photos(size: int) -> np.ndarray:
  """(4, size, size, 3) float32 in [0, 1]: centre square crops of `PHOTOS`
  resized (bilinear, antialiased) to ``size``."""
  import skimage.data  # pylint: disable=g-import-not-at-top
  import skimage.transform  # pylint: disable=g-import-not-at-top
  out = []
  for name in PHOTOS:
    img = getattr(skimage.data, name)()[..., :3]
    h, w = img.shape[:2]
    s = min(h, w)
    img = img[(h - s) // 2:(h - s) // 2 + s, (w - s) // 2:(w - s) // 2 + s]
    img = skimage.transform.resize(img, (size, size), order=1,
                                   anti_aliasing=True)
    out.append(np.clip(img, 0, 1).astype(np.float32))
  return np.stack(out)
