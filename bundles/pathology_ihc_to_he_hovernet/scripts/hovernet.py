"""The study's HoVer-Net half: PanNuke datalist, the transforms its pipelines need beyond MONAI's (the pipelines
themselves are transform lists in ``train_hovernet.json``), the two-stage network, and the evaluation by panoptic
quality, Dice and centroid-matching F1.

The scheme is the MONAI model zoo's ``pathology_nuclei_segmentation_classification`` bundle's: fast mode (256x256
input, 164x164 output), labels centre-cropped to the output, ``HoVerNetLoss``, stage 0 with the encoder frozen and
stage 1 training everything from stage 0's weights, MONAI's HoVer-Net post-processing to instance and type maps.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Hashable, Iterable, Mapping, Sequence

import numpy as np
import torch
from monai.config import KeysCollection
from monai.metrics import PanopticQualityMetric
from monai.metrics.panoptic_quality import compute_panoptic_quality
from monai.networks.nets import HoVerNet
from monai.transforms import MapTransform, RandomizableTransform
from scipy import ndimage
from scipy.optimize import linear_sum_assignment

from shared.data.integrity import verify_sha256
from shared.data.splits import write_datalist
from shared.metrics.epoch_report import EpochReport

from .layout import NUCLEUS_TYPES, pannuke_datalist

__all__ = [
    "NUM_CLASSES", "PATCH_SIZE", "OUT_SIZE", "MATCH_RADIUS", "build_pannuke_datalist", "RandColorJitterd",
    "NucleiMaskd", "hovernet_fast", "hovernet_for_stage", "nuclei_centroids",
    "match_centroids", "detection_counts", "NucleiReport",
]

logger = logging.getLogger(__name__)
NUM_CLASSES = len(NUCLEUS_TYPES) + 1  # PanNuke's five types and the background
PATCH_SIZE, OUT_SIZE = 256, 164  # HoVer-Net fast mode: a 256x256 input gives the central 164x164
MATCH_RADIUS = 12.0  # pixels: a predicted centroid this close to a true one can match it (EndoNuke's protocol)


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

def hovernet_fast(freeze_encoder: bool = False, init_weights: str | None = None,
                  num_classes: int = NUM_CLASSES) -> HoVerNet:
    """MONAI's HoVer-Net in fast mode (256x256 in, 164x164 out): a 2-channel nuclei branch, a ``num_classes``-channel
    type branch and the hv branch, no pretrained encoder. ``freeze_encoder`` freezes the encoder (stage 0);
    ``init_weights`` loads a state dict saved by this bundle (sha256-checked)."""
    network = HoVerNet(mode="fast", in_channels=3, np_out_channels=2, out_classes=num_classes, pretrained_url=None,
                       freeze_encoder=freeze_encoder)
    if init_weights is not None:
        verify_sha256(init_weights)
        network.load_state_dict(torch.load(init_weights, map_location="cpu", weights_only=True))
        logger.info(f"HoVer-Net initialised from {init_weights}")
    return network


def hovernet_for_stage(stage: int, stage0_weights: str, num_classes: int = NUM_CLASSES) -> HoVerNet:
    """The network of a training stage: stage 0 trains the decoders on a frozen, freshly initialised encoder;
    stage 1 trains every layer, starting from stage 0's best weights (``stage0_weights``)."""
    if stage not in (0, 1):
        raise ValueError(f"stage must be 0 (encoder frozen) or 1 (all layers); got {stage!r}.")
    if stage == 0:
        return hovernet_fast(freeze_encoder=True, num_classes=num_classes)
    if not os.path.isfile(stage0_weights):
        raise FileNotFoundError(f"stage 1 starts from stage 0's weights, and {stage0_weights} does not exist: "
                                "train stage 0 first (--stage 0).")
    return hovernet_fast(freeze_encoder=False, init_weights=stage0_weights, num_classes=num_classes)


# --- evaluation ---------------------------------------------------------------------------------------------------

def _as_map(array) -> np.ndarray:
    array = np.asarray(torch.as_tensor(array).detach().cpu())
    return array[0] if array.ndim == 3 else array


def nuclei_centroids(instance_map, type_map=None) -> tuple[np.ndarray, np.ndarray]:
    """``(centroids, types)`` of the nuclei of an instance map ((1,) H, W): (N, 2) row / column centres of mass and
    each nucleus's majority type in ``type_map`` (0 without one)."""
    instances = _as_map(instance_map).astype(np.int64)
    ids = np.unique(instances[instances > 0])
    if len(ids) == 0:
        return np.zeros((0, 2)), np.zeros(0, np.int64)
    centroids = np.asarray(ndimage.center_of_mass(np.ones_like(instances), instances, ids), float).reshape(-1, 2)
    if type_map is None:
        return centroids, np.zeros(len(ids), np.int64)
    kinds = _as_map(type_map).astype(np.int64)
    types = np.array([np.bincount(kinds[instances == i]).argmax() for i in ids], np.int64)
    return centroids, types


def match_centroids(predicted: np.ndarray, true: np.ndarray, radius: float = MATCH_RADIUS) -> tuple[int, int, int]:
    """``(tp, fp, fn)``: predicted and true centroids ((N, 2) each) paired one-to-one by the Hungarian algorithm on
    their distances; a pair farther apart than ``radius`` does not count."""
    if len(predicted) == 0 or len(true) == 0:
        return 0, len(predicted), len(true)
    distance = np.linalg.norm(predicted[:, None, :] - true[None, :, :], axis=-1)
    cost = np.where(distance <= radius, distance, radius * 1e3)  # out of reach: paired only if nothing else fits
    rows, cols = linear_sum_assignment(cost)
    tp = int((distance[rows, cols] <= radius).sum())
    return tp, len(predicted) - tp, len(true) - tp


def detection_counts(pred_inst, pred_type, true_inst, true_type, num_types: int = len(NUCLEUS_TYPES),
                     radius: float = MATCH_RADIUS) -> np.ndarray:
    """Centroid-matching counts of one tile, ``(num_types + 1, 3)``: row 0 every nucleus whatever its type, row
    ``t`` the nuclei of type ``t`` matched among themselves; columns tp, fp, fn."""
    pred_points, pred_kinds = nuclei_centroids(pred_inst, pred_type)
    true_points, true_kinds = nuclei_centroids(true_inst, true_type)
    counts = np.zeros((num_types + 1, 3), np.int64)
    counts[0] = match_centroids(pred_points, true_points, radius)
    for t in range(1, num_types + 1):
        counts[t] = match_centroids(pred_points[pred_kinds == t], true_points[true_kinds == t], radius)
    return counts


def _ratio(numerator: float, denominator: float) -> float | None:
    return float(numerator / denominator) if denominator > 0 else None


def _scores(pq: Sequence[float], overlap: Sequence[float], detection: Sequence[float]) -> dict:
    """PQ / SQ / RQ from (tp, fp, fn, iou sum), Dice from (intersection, sizes), precision / recall / F1 from
    centroid (tp, fp, fn)."""
    tp, fp, fn, iou = pq
    d_tp, d_fp, d_fn = detection
    return {
        "pq": _ratio(iou, tp + 0.5 * fp + 0.5 * fn), "sq": _ratio(iou, tp), "rq": _ratio(tp, tp + 0.5 * fp + 0.5 * fn),
        "dice": _ratio(2 * overlap[0], overlap[1]),
        "precision": _ratio(d_tp, d_tp + d_fp), "recall": _ratio(d_tp, d_tp + d_fn),
        "f1": _ratio(2 * d_tp, 2 * d_tp + d_fp + d_fn),
        "true_nuclei": int(d_tp + d_fn), "predicted_nuclei": int(d_tp + d_fp),
    }


def _mean(values: Iterable[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return float(np.mean(present)) if present else None


class NucleiReport(EpochReport):
    """Nucleus instance segmentation and typing over an evaluation: per type and overall (any type) panoptic
    quality (PQ, SQ, RQ by ``monai.metrics.PanopticQualityMetric``, matched at IoU > 0.5), pixel Dice, and
    centroid-matching precision, recall and F1 (Hungarian pairing within ``match_radius`` pixels). Every count is
    summed over the tiles before the ratios are taken; ``mpq`` is the mean of the types' PQ, ``bpq`` the mean over
    tiles of the binary PQ (PanNuke's two summaries). Writes ``<name>.json`` (also each tile's numbers), ``.csv``
    and ``.md`` (a model-card table).

    Reads the decollated outputs' ``pred_inst_key`` / ``pred_type_key`` (MONAI's HoVer-Net post-processing) and
    the batch's ``true_inst_key`` / ``true_type_key`` whole-tile maps."""

    csv_header = ("nuclei", "pq", "sq", "rq", "dice", "precision", "recall", "f1", "true_nuclei", "predicted_nuclei")

    def __init__(self, output_dir: str, name: str = "nuclei_metrics", type_names: Sequence[str] = NUCLEUS_TYPES,
                 match_radius: float = MATCH_RADIUS, pred_inst_key: str = "instance_map",
                 pred_type_key: str = "type_map", true_inst_key: str = "label_inst", true_type_key: str = "label_type",
                 case_key: str = "case") -> None:
        super().__init__(output_dir, name)
        self.type_names, self.match_radius = list(type_names), float(match_radius)
        self.pred_keys, self.true_keys = (pred_inst_key, pred_type_key), (true_inst_key, true_type_key)
        self.case_key = case_key
        self.type_pq = PanopticQualityMetric(num_classes=len(self.type_names), reduction="sum_batch",
                                             return_confusion_matrix=True)
        self.reset()

    def reset(self) -> None:
        self.type_pq.reset()
        self.binary_pq = np.zeros(4)
        n = len(self.type_names) + 1
        self.overlap = np.zeros((n, 2))  # row 0 nuclei mask, row t type t: (intersection, |pred| + |true|)
        self.detection = np.zeros((n, 3), np.int64)
        self.tiles: list[dict] = []

    def update(self, engine) -> None:
        if not isinstance(engine.state.output, list):  # a case that failed (CaseEvaluator) leaves nothing to score
            return
        batch = engine.state.batch if isinstance(engine.state.batch, list) else [{}] * len(engine.state.output)
        for item, out in zip(batch, engine.state.output):
            item = {**item, **out}
            pred_inst, pred_type = (torch.as_tensor(_as_map(item[k])).long() for k in self.pred_keys)
            true_inst, true_type = (torch.as_tensor(_as_map(item[k])).long() for k in self.true_keys)
            self.type_pq(y_pred=torch.stack([pred_inst, pred_type])[None], y=torch.stack([true_inst, true_type])[None])
            binary = compute_panoptic_quality(pred_inst, true_inst, output_confusion_matrix=True).cpu().numpy()
            self.binary_pq += binary
            masks = [(pred_inst > 0, true_inst > 0)] + [(pred_type == t, true_type == t)
                                                        for t in range(1, len(self.type_names) + 1)]
            overlap = np.array([[(p & t).sum().item(), p.sum().item() + t.sum().item()] for p, t in masks], float)
            self.overlap += overlap
            counts = detection_counts(pred_inst, pred_type, true_inst, true_type, len(self.type_names),
                                      self.match_radius)
            self.detection += counts
            tile = _scores(binary, overlap[0], counts[0])
            self.tiles.append({"case": str(item.get(self.case_key, len(self.tiles))),
                               **{k: tile[k] for k in ("pq", "dice", "f1", "true_nuclei", "predicted_nuclei")}})

    def compute(self) -> dict:
        types = {}
        if self.tiles:
            per_type = self.type_pq.aggregate().cpu().numpy().reshape(len(self.type_names), 4)
        else:
            per_type = np.zeros((len(self.type_names), 4))
        for t, name in enumerate(self.type_names, start=1):
            types[name] = _scores(per_type[t - 1], self.overlap[t], self.detection[t])
        overall = _scores(self.binary_pq, self.overlap[0], self.detection[0])
        present = [name for name, values in types.items() if values["true_nuclei"] > 0]
        return {
            "num_tiles": len(self.tiles), "match_radius": self.match_radius, "overall": overall, "types": types,
            "mpq": _mean(types[name]["pq"] for name in present), "bpq": _mean(tile["pq"] for tile in self.tiles),
            "tiles": self.tiles,
        }

    def csv_rows(self, result: dict):
        rows = [("all", result["overall"])] + list(result["types"].items())
        return ([name, *("" if values[c] is None else (f"{values[c]:.4f}" if isinstance(values[c], float)
                                                        else values[c]) for c in self.csv_header[1:])]
                for name, values in rows)

    @staticmethod
    def markdown(result: dict) -> str:
        def cell(value) -> str:
            return "-" if value is None else f"{value:.3f}"

        lines = ["| nuclei | PQ | SQ | RQ | Dice | precision | recall | F1 | true | predicted |",
                 "|---|---|---|---|---|---|---|---|---|---|"]
        for name, m in [("all", result["overall"]), *result["types"].items()]:
            lines.append(f"| {name} | {cell(m['pq'])} | {cell(m['sq'])} | {cell(m['rq'])} | {cell(m['dice'])} | "
                         f"{cell(m['precision'])} | {cell(m['recall'])} | {cell(m['f1'])} | {m['true_nuclei']} | "
                         f"{m['predicted_nuclei']} |")
        return (f"Measured by `configs/evaluate_hovernet.json` on {result['num_tiles']} test tile(s); counts summed "
                f"over the tiles; centroids matched within {result['match_radius']:g} px. mPQ "
                f"{cell(result['mpq'])}, bPQ {cell(result['bpq'])}.\n\n" + "\n".join(lines) + "\n")

    def summary(self, result: dict) -> str:
        m = result["overall"]
        values = ", ".join(f"{k} {'-' if m[k] is None else format(m[k], '.4f')}" for k in ("pq", "dice", "f1"))
        return f"nuclei on {result['num_tiles']} tile(s): {values}, mPQ {result['mpq']}"
