"""PNG overlay of a label map on the axial slice where it covers the most voxels."""

from __future__ import annotations

import os
from collections.abc import Hashable, Mapping, Sequence

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform
from PIL import Image

from shared.data.case_names import case_name, plain_case_name
from shared.transforms.validation import source_name
from shared.writers.naming import output_path

__all__ = ["render_overlay", "SaveOverlayd"]


def render_overlay(image: np.ndarray, labels: np.ndarray, colours: Sequence[Sequence[int]], alpha: float = 0.45) -> np.ndarray:
    """RGB uint8 of a 2D ``image`` (any range) with ``labels`` 1..N blended in ``colours``; array rows = first axis."""
    lo, hi = np.percentile(image, [0.5, 99.5]) if image.size else (0.0, 1.0)
    grey = np.clip((image - lo) / max(hi - lo, 1e-8), 0, 1)
    rgb = np.repeat(grey[..., None] * 255.0, 3, axis=-1)
    for value, colour in enumerate(colours, start=1):
        mask = labels == value
        rgb[mask] = (1 - alpha) * rgb[mask] + alpha * np.asarray(colour, dtype=float)
    return rgb.astype(np.uint8)


class SaveOverlayd(MapTransform):
    """Write ``<case>_overlay.png``: channel ``channel`` of ``image_key`` on the axial slice (last axis of a RAS
    volume) with the most foreground in ``keys`` (a (1, X, Y, Z) label map or (C, X, Y, Z) one-hot), labels 1..N in
    ``colours``, shown anterior up with the patient's right on the picture's right (neurological convention)."""

    def __init__(
        self,
        keys: KeysCollection,
        image_key: str,
        output_dir: str,
        colours: Sequence[Sequence[int]],
        channel: int = 0,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.image_key, self.output_dir, self.channel, self.colours = image_key, output_dir, channel, colours

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> Mapping[Hashable, torch.Tensor]:
        for key in self.key_iterator(data):
            labels = torch.as_tensor(data[key]).detach().cpu()
            labels = labels.argmax(0) if labels.shape[0] > 1 else labels[0]
            image = torch.as_tensor(data[self.image_key]).detach().cpu()[self.channel].float()
            z = int((labels > 0).sum((0, 1)).argmax())
            picture = render_overlay(image[..., z].numpy().T[::-1], labels[..., z].numpy().T[::-1], self.colours)
            os.makedirs(self.output_dir, exist_ok=True)
            meta = getattr(data[self.image_key], "meta", {})
            name = meta.get("case") or case_name(source_name(data[self.image_key], default="case"))
            Image.fromarray(picture).save(output_path(self.output_dir, f"{plain_case_name(str(name))}_overlay.png"))
        return data
