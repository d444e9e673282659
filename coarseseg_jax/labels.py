"""The label values every module shares (label maps, PNGs, TFRecords).

Class ids are 0..C-1; `IGNORE_LABEL` marks a pixel without a label (the band
coarse labels leave around class borders, unlabelled fine pixels, padding),
which no loss or metric counts. `IGNORE_SLIC` marks a pixel without a SLIC
superpixel (padding, ids beyond the loss's slots).
"""

IGNORE_LABEL = 255
IGNORE_SLIC = -1
