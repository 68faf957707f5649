"""MONAI's HoVer-Net post-processing for whole images: same arguments, same results, cost that grows with the image.

``monai.apps.pathology.transforms.HoVerNetInstanceMapPostProcessingd`` and ``HoVerNetNuclearTypePostProcessingd``
compare the whole instance map with each nucleus's id in turn (bounding box, type map), so their cost grows with the
number of pixels times the number of nuclei: about 40 s for a 2048x2048 map with 3,000 nuclei, minutes for a
3000x2000 image. These subclasses run MONAI's own steps (watershed mask, instance borders, distance map, markers,
watershed, contour, centroid, instance type) and look at each nucleus only inside its bounding box
(``scipy.ndimage.find_objects``). They also accept maps without any nucleus, for which MONAI raises "Not a valid
hover map" (a region of background, an empty tile): the result is then empty.
"""

from __future__ import annotations

import contextlib
import io

import numpy as np
import torch
from monai.apps.pathology.transforms import (
    HoVerNetInstanceMapPostProcessing,
    HoVerNetInstanceMapPostProcessingd,
    HoVerNetNuclearTypePostProcessing,
    HoVerNetNuclearTypePostProcessingd,
)
from monai.config import NdarrayOrTensor
from monai.transforms import FillHoles
from monai.utils import convert_to_dst_type, convert_to_numpy, convert_to_tensor
from scipy import ndimage

__all__ = [
    "BoxedHoVerNetInstanceMapPostProcessing", "BoxedHoVerNetInstanceMapPostProcessingd",
    "BoxedHoVerNetNuclearTypePostProcessing", "BoxedHoVerNetNuclearTypePostProcessingd",
]

_INSTANCE_MAP_ARGS = ("activation", "mask_threshold", "min_object_size", "sobel_kernel_size", "distance_smooth_fn",
                      "marker_threshold", "marker_radius", "marker_postprocess_fn", "watershed_connectivity",
                      "min_num_points", "contour_level", "device")
_NUCLEAR_TYPE_ARGS = ("activation", "threshold", "return_type_map", "device")


def _copy(array: NdarrayOrTensor) -> NdarrayOrTensor:
    return array.clone() if isinstance(array, torch.Tensor) else np.array(array, copy=True)


class BoxedHoVerNetInstanceMapPostProcessing(HoVerNetInstanceMapPostProcessing):
    """``monai.apps.pathology.transforms.HoVerNetInstanceMapPostProcessing`` (same arguments and results) that
    computes each nucleus's contour and centroid inside its bounding box."""

    def __call__(self, nuclear_prediction: NdarrayOrTensor, hover_map: NdarrayOrTensor
                 ) -> tuple[dict, NdarrayOrTensor]:  # type: ignore[override]
        watershed_mask = self.generate_watershed_mask(nuclear_prediction)
        hover = convert_to_numpy(hover_map)
        if not convert_to_numpy(watershed_mask).any() or min(np.ptp(hover[0]), np.ptp(hover[1])) == 0:
            empty = torch.zeros((1, *watershed_mask.shape[-2:]), dtype=torch.int64)
            return {}, convert_to_tensor(empty, device=self.device)
        instance_borders = self.generate_instance_border(watershed_mask, hover_map)
        distance_map = self.generate_distance_map(watershed_mask, instance_borders)
        watershed_markers = self.generate_watershed_markers(watershed_mask, instance_borders)
        instance_map = self.watershed(distance_map, watershed_mask, watershed_markers)

        labels = convert_to_numpy(instance_map)[0].astype(np.int64)
        instance_info = {}
        # MONAI's contour step prints a line for every nucleus too small to have a contour: not for each of thousands
        with contextlib.redirect_stdout(io.StringIO()):
            for inst_id, box in enumerate(ndimage.find_objects(labels), start=1):
                if box is None:
                    continue
                rows, cols = box
                instance_mask = instance_map[:, rows, cols] == inst_id
                instance_bbox = np.array([[rows.start, rows.stop, cols.start, cols.stop]])
                offset = [cols.start, rows.start]
                # FillHoles fills a contiguous mask in place; MONAI's (a strided view) is copied first: copy too
                instance_contour = self.generate_instance_contour(FillHoles()(_copy(instance_mask)), offset)
                if instance_contour is not None:
                    instance_info[inst_id] = {
                        "bounding_box": instance_bbox,
                        "centroid": self.generate_instance_centroid(instance_mask, offset),
                        "contour": instance_contour,
                    }
        return instance_info, convert_to_tensor(instance_map, device=self.device)


class BoxedHoVerNetNuclearTypePostProcessing(HoVerNetNuclearTypePostProcessing):
    """``monai.apps.pathology.transforms.HoVerNetNuclearTypePostProcessing`` (same arguments and results) that
    fills the type map inside each nucleus's bounding box."""

    def __call__(self, type_prediction: NdarrayOrTensor, instance_info: dict[int, dict],
                 instance_map: NdarrayOrTensor) -> tuple[dict, NdarrayOrTensor | None]:  # type: ignore[override]
        type_prediction = self.as_discrete(self.activation(type_prediction))
        type_map = None
        if self.return_type_map:
            type_map = convert_to_dst_type(torch.zeros(instance_map.shape), instance_map)[0]
        for inst_id, info in instance_info.items():
            instance_type, instance_type_prob = self.generate_instance_type(
                type_pred=type_prediction, seg_pred=instance_map, bbox=info["bounding_box"], instance_id=inst_id)
            info["type_prob"], info["type"] = instance_type_prob, instance_type
            if type_map is not None:
                r0, r1, c0, c1 = (int(v) for v in info["bounding_box"].flatten())
                box = type_map[:, r0:r1, c0:c1]
                box[instance_map[:, r0:r1, c0:c1] == inst_id] = instance_type
        if type_map is not None:
            type_map = convert_to_tensor(type_map, device=self.device)
        return instance_info, type_map


class BoxedHoVerNetInstanceMapPostProcessingd(HoVerNetInstanceMapPostProcessingd):
    """``monai.apps.pathology.transforms.HoVerNetInstanceMapPostProcessingd`` (same keyword arguments and results)
    with :class:`BoxedHoVerNetInstanceMapPostProcessing` inside."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.instance_map_post_process = BoxedHoVerNetInstanceMapPostProcessing(
            **{k: v for k, v in kwargs.items() if k in _INSTANCE_MAP_ARGS})


class BoxedHoVerNetNuclearTypePostProcessingd(HoVerNetNuclearTypePostProcessingd):
    """``monai.apps.pathology.transforms.HoVerNetNuclearTypePostProcessingd`` (same keyword arguments and results)
    with :class:`BoxedHoVerNetNuclearTypePostProcessing` inside."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.type_post_process = BoxedHoVerNetNuclearTypePostProcessing(
            **{k: v for k, v in kwargs.items() if k in _NUCLEAR_TYPE_ARGS})
