"""The MNI152 2009a symmetric template (T1 and grey / white-matter maps, 1 mm) that nilearn's wheel ships."""

from __future__ import annotations

import functools

import numpy as np
from scipy import ndimage

__all__ = ["MNITemplate", "load_mni_template"]


class MNITemplate:
    """T1 intensities, tissue probability maps and a brain mask on the template grid (RAS, 1 mm, 197x233x189)."""

    def __init__(self, t1: np.ndarray, gm: np.ndarray, wm: np.ndarray, affine: np.ndarray) -> None:
        self.t1, self.gm, self.wm, self.affine = t1, gm, wm, affine
        tissue = ndimage.binary_closing(gm + wm > 0.3, iterations=3)
        # Ventricles are holes in the grey+white map; filling them puts the CSF that BraTS keeps inside the mask.
        self.brain = ndimage.binary_dilation(ndimage.binary_fill_holes(tissue), iterations=1)
        self.csf = np.clip(self.brain.astype(np.float32) - gm - wm, 0.0, 1.0)


@functools.lru_cache(maxsize=1)
def load_mni_template() -> MNITemplate:
    """The template as nilearn loads it from its package data (no download), intensities and maps in [0, 1]."""
    from nilearn.datasets import load_mni152_gm_template, load_mni152_template, load_mni152_wm_template

    images = {"t1": load_mni152_template(1), "gm": load_mni152_gm_template(1), "wm": load_mni152_wm_template(1)}
    arrays = {k: np.asarray(im.dataobj, dtype=np.float32) for k, im in images.items()}
    return MNITemplate(arrays["t1"], arrays["gm"], arrays["wm"], images["t1"].affine)
