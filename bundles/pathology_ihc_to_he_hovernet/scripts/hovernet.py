"""The study's HoVer-Net half: PanNuke datalist, the transforms its pipelines need beyond MONAI's (the pipelines
themselves are transform lists in ``train_hovernet.json``), and the two-stage network (the evaluation by panoptic
quality, Dice and centroid-matching F1 is ``shared.metrics.nuclei_report.NucleiReport``).

The scheme is the MONAI model zoo's ``pathology_nuclei_segmentation_classification`` bundle's: fast mode (256x256
input, 164x164 output), labels centre-cropped to the output, ``HoVerNetLoss``, stage 0 with the encoder frozen and
stage 1 training everything from stage 0's weights, MONAI's HoVer-Net post-processing to instance and type maps.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Hashable, Mapping, Sequence

import torch
from monai.config import KeysCollection
from monai.networks.nets import HoVerNet
from monai.networks.utils import copy_model_state
from monai.transforms import MapTransform, RandomizableTransform

from shared.data.integrity import verify_sha256
from shared.data.splits import write_datalist
from shared.data.weights_record import recorded_settings
from shared.networks.hovernet import RecordedHoVerNet

from .layout import NUCLEUS_TYPES, pannuke_datalist

__all__ = ["NUM_CLASSES", "PATCH_SIZE", "OUT_SIZE", "build_pannuke_datalist", "RandColorJitterd", "NucleiMaskd",
           "hovernet_fast", "start_from", "hovernet_for_stage"]

logger = logging.getLogger(__name__)
NUM_CLASSES = len(NUCLEUS_TYPES) + 1  # PanNuke's five types and the background
PATCH_SIZE, OUT_SIZE = 256, 164  # HoVer-Net fast mode: a 256x256 input gives the central 164x164


# --- data ---------------------------------------------------------------------------------------------------------

def build_pannuke_datalist(dataset_dir: str, datalist_file: str, train_folds: Sequence[int] = (1,),
                           val_folds: Sequence[int] = (2,), test_folds: Sequence[int] = (3,),
                           max_tiles_per_fold: int | None = None, files: dict[str, str] | None = None
                           ) -> dict[str, list[dict]]:
    """``training`` / ``validation`` / ``test`` tiles of PanNuke folds (in-memory items, see
    ``layout.pannuke_items``), with the split recorded in the datalist JSON (case names and tissues, ``excluded``
    for the tiles screening sets aside later)."""
    if not os.path.isdir(dataset_dir):
        raise FileNotFoundError(f"dataset_dir {dataset_dir} does not exist or is not a folder.")
    split = pannuke_datalist(dataset_dir, train_folds, val_folds, test_folds, files=files,
                             max_tiles_per_fold=max_tiles_per_fold)
    record = {section: [{"case": item["case"], "tissue": item["tissue"]} for item in items]
              for section, items in split.items()}
    folds = {"training": list(train_folds), "validation": list(val_folds), "test": list(test_folds)}
    write_datalist({"dataset_dir": os.path.abspath(dataset_dir), "folds": folds, **record, "excluded": []},
                   datalist_file)
    logger.info(f"datalist {datalist_file}: " + ", ".join(f"{len(v)} {k}" for k, v in split.items()) + " tile(s)")
    return split


class RandColorJitterd(RandomizableTransform, MapTransform):
    """Colour jitter of RGB images on [0, 1] (channel first), after torchvision's ``ColorJitter`` that the zoo
    bundle uses: brightness and contrast factors, saturation (blend with the grey image) and a hue shift (a
    rotation of the chroma plane in YIQ space by ``2 pi hue``), each drawn uniformly from its range; clipped to
    [0, 1]."""

    _RGB_TO_YIQ = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])

    def __init__(self, keys: KeysCollection, brightness: Sequence[float] = (0.9, 1.1),
                 contrast: Sequence[float] = (0.95, 1.1), saturation: Sequence[float] = (0.8, 1.2),
                 hue: Sequence[float] = (-0.04, 0.04), prob: float = 1.0, allow_missing_keys: bool = False) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        RandomizableTransform.__init__(self, prob)
        self.ranges = {"brightness": brightness, "contrast": contrast, "saturation": saturation, "hue": hue}
        self.factors = {"brightness": 1.0, "contrast": 1.0, "saturation": 1.0, "hue": 0.0}

    def randomize(self, data=None) -> None:
        super().randomize(None)
        self.factors = {name: float(self.R.uniform(*bounds)) for name, bounds in self.ranges.items()}

    def jitter(self, image: torch.Tensor) -> torch.Tensor:
        """``image`` (3, H, W) on [0, 1] with the current factors applied."""
        f = self.factors
        yiq_from_rgb = self._RGB_TO_YIQ.to(image)
        image = image * f["brightness"]
        grey = torch.einsum("c,chw->hw", yiq_from_rgb[0], image)
        image = f["contrast"] * image + (1 - f["contrast"]) * grey.mean()
        grey = torch.einsum("c,chw->hw", yiq_from_rgb[0], image)
        image = f["saturation"] * image + (1 - f["saturation"]) * grey
        if f["hue"]:
            angle = 2 * math.pi * f["hue"]
            rotation = torch.eye(3).to(image)
            rotation[1:, 1:] = torch.tensor([[math.cos(angle), -math.sin(angle)],
                                             [math.sin(angle), math.cos(angle)]]).to(image)
            transform = torch.linalg.inv(yiq_from_rgb) @ rotation @ yiq_from_rgb
            image = torch.einsum("dc,chw->dhw", transform, image)
        return image.clamp(0.0, 1.0)

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict:
        d = dict(data)
        self.randomize()
        if not self._do_transform:
            return d
        for key in self.key_iterator(d):
            d[key] = self.jitter(torch.as_tensor(d[key]).float())
        return d


class NucleiMaskd(MapTransform):
    """``output_key`` = the nuclei mask (instance map > 0) of ``keys``' instance map, as a 0/1 map."""

    def __init__(self, keys: KeysCollection, output_key: str = "label", allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.output_key = output_key

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            d[self.output_key] = (d[key] > 0).to(torch.uint8) if isinstance(d[key], torch.Tensor) else d[key] > 0
        return d


# --- network ------------------------------------------------------------------------------------------------------

def hovernet_fast(freeze_encoder: bool = False, init_weights: str | None = None, num_classes: int = NUM_CLASSES,
                  adapt_standard_resnet: bool = False) -> HoVerNet:
    """MONAI's HoVer-Net in fast mode (256x256 in, 164x164 out) with its settings recorded in its weights
    (``shared.networks.hovernet.RecordedHoVerNet``): a 2-channel nuclei branch, a ``num_classes``-channel type branch
    and the hv branch, no pretrained encoder download. ``freeze_encoder`` freezes the encoder (stage 0);
    ``init_weights`` loads a state dict saved by this bundle (sha256-checked); ``adapt_standard_resnet`` as the model
    zoo's network (its encoder follows torchvision's ResNet-50)."""
    network = RecordedHoVerNet(mode="fast", in_channels=3, np_out_channels=2, out_classes=num_classes,
                               pretrained_url=None, freeze_encoder=freeze_encoder,
                               adapt_standard_resnet=adapt_standard_resnet)
    if init_weights is not None:
        verify_sha256(init_weights)
        network.load_state_dict(torch.load(init_weights, map_location="cpu", weights_only=True))
        logger.info(f"HoVer-Net initialised from {init_weights}")
    return network


def start_from(network: HoVerNet, weights: str) -> HoVerNet:
    """``network`` with every tensor of the HoVer-Net weights at ``weights`` whose name and shape match (a model zoo
    checkpoint, for fine-tuning): with another number of types, the type head's last layer keeps its fresh
    initialisation, and is logged."""
    state = torch.load(weights, map_location="cpu", weights_only=True)
    state = state.get("model", state) if isinstance(state, Mapping) else state
    state = {k: v for k, v in state.items() if k != "_extra_state"}
    _, copied, kept = copy_model_state(network, state, inplace=True)
    missing = sorted(set(network.state_dict()) - set(copied) - {"_extra_state"})
    if not copied:
        raise ValueError(f"{weights}: no tensor of these weights fits the HoVer-Net; they are not HoVer-Net weights.")
    logger.info(f"HoVer-Net starts from {weights}: {len(copied)} tensors copied"
                + (f"; left freshly initialised (another shape or absent): {missing}" if missing else ""))
    return network


def hovernet_for_stage(stage: int, stage0_weights: str, num_classes: int = NUM_CLASSES, init_weights: str | None = None,
                       adapt_standard_resnet: bool = False) -> HoVerNet:
    """The network of a training stage: stage 0 trains the decoders on a frozen encoder, freshly initialised or,
    with ``init_weights`` (e.g. the model zoo's HoVer-Net, with ``adapt_standard_resnet``), taken from those weights
    (:func:`start_from`); stage 1 trains every layer, starting from stage 0's best weights (``stage0_weights``) and
    built with the settings they record."""
    if stage not in (0, 1):
        raise ValueError(f"stage must be 0 (encoder frozen) or 1 (all layers); got {stage!r}.")
    if stage == 0:
        network = hovernet_fast(freeze_encoder=True, num_classes=num_classes,
                                adapt_standard_resnet=adapt_standard_resnet)
        return start_from(network, init_weights) if init_weights else network
    if not os.path.isfile(stage0_weights):
        raise FileNotFoundError(f"stage 1 starts from stage 0's weights, and {stage0_weights} does not exist: "
                                "train stage 0 first (--stage 0).")
    recorded = recorded_settings(stage0_weights)
    return hovernet_fast(freeze_encoder=False, init_weights=stage0_weights, num_classes=num_classes,
                         adapt_standard_resnet=recorded.get("adapt_standard_resnet", adapt_standard_resnet))
