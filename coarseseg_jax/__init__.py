"""coarseseg-jax: semantic segmentation trained on coarse annotations.

JAX/Flax implementation of FCN-16 with learned superpixel upsampling (HCFCN-16)
and the SLIC reconstruction regularizer of de Jong & Holenderski, "Semantic
segmentation with coarse annotations" (arXiv 2510.15756).

The numeric core is pure functions (NHWC arrays in, arrays out, jit-able):
`coarseseg_jax.superpixels`, `coarseseg_jax.losses`, `coarseseg_jax.metrics`,
`coarseseg_jax.color`. Training entry point: `python -m coarseseg_jax.main`.
"""

__version__ = "0.1.0"
