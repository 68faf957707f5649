"""Nucleus instance segmentation and typing scored as HoVer-Net papers score it: panoptic quality per type and
overall, pixel Dice, and centroid-matching precision / recall / F1, as an evaluator handler writing JSON, CSV and a
model-card table."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import torch
from monai.metrics import PanopticQualityMetric
from monai.metrics.panoptic_quality import compute_panoptic_quality
from scipy import ndimage
from scipy.optimize import linear_sum_assignment

from shared.metrics.epoch_report import EpochReport

__all__ = ["MATCH_RADIUS", "nuclei_centroids", "match_centroids", "detection_counts", "NucleiReport"]

MATCH_RADIUS = 12.0  # pixels: a predicted centroid this close to a true one can match it (EndoNuke's protocol)


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


def detection_counts(pred_inst, pred_type, true_inst, true_type, num_types: int,
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

    ``type_names`` name the types 1, 2, ... of the type maps; with none, only the type-agnostic scores are computed
    (weights whose types are not the labels', e.g. CoNSeP-typed weights on PanNuke tiles). Reads the decollated outputs' ``pred_inst_key`` / ``pred_type_key`` (MONAI's HoVer-Net post-processing) and
    the batch's ``true_inst_key`` / ``true_type_key`` whole-tile maps."""

    csv_header = ("nuclei", "pq", "sq", "rq", "dice", "precision", "recall", "f1", "true_nuclei", "predicted_nuclei")

    def __init__(self, output_dir: str, type_names: Sequence[str], name: str = "nuclei_metrics",
                 match_radius: float = MATCH_RADIUS, pred_inst_key: str = "instance_map",
                 pred_type_key: str = "type_map", true_inst_key: str = "label_inst", true_type_key: str = "label_type",
                 case_key: str = "case") -> None:
        super().__init__(output_dir, name)
        self.type_names, self.match_radius = list(type_names), float(match_radius)
        self.pred_keys, self.true_keys = (pred_inst_key, pred_type_key), (true_inst_key, true_type_key)
        self.case_key = case_key
        self.type_pq = PanopticQualityMetric(num_classes=len(self.type_names), reduction="sum_batch",
                                             return_confusion_matrix=True) if self.type_names else None
        self.reset()

    def reset(self) -> None:
        if self.type_pq is not None:
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
            if self.type_pq is not None:
                self.type_pq(y_pred=torch.stack([pred_inst, pred_type])[None],
                             y=torch.stack([true_inst, true_type])[None])
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
        if self.tiles and self.type_pq is not None:
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
