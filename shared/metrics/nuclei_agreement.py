"""How far two nuclei segmentations of the same image agree: instances matched one to one at IoU >= 0.5 (at that
threshold a nucleus can overlap at most one other that much), the share of each side's nuclei matched, and the share
of matched pairs with the same type. Used to hold a faster inference to the nuclei of the reference one
(``benchmarks.nuclei_side_by_side``, ``tests/test_pathology_speed.py``)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

__all__ = ["NucleiAgreement", "nuclei_agreement"]


@dataclass(frozen=True)
class NucleiAgreement:
    """``matched``: pairs at IoU >= ``iou``; ``reference`` / ``candidate``: nuclei on each side;
    ``reference_matched`` / ``candidate_matched``: the share of each side's nuclei in a pair (1.0 when a side has
    none); ``same_type``: the share of pairs whose types agree (1.0 without pairs); ``mean_iou`` of the pairs."""

    reference: int
    candidate: int
    matched: int
    reference_matched: float
    candidate_matched: float
    same_type: float
    mean_iou: float
    iou: float

    @property
    def both_ways(self) -> float:
        """The smaller of the two matched shares."""
        return min(self.reference_matched, self.candidate_matched)

    def as_dict(self) -> dict:
        return {**asdict(self), "both_ways": self.both_ways}


def nuclei_agreement(reference: np.ndarray, candidate: np.ndarray, reference_types: np.ndarray | None = None,
                     candidate_types: np.ndarray | None = None, iou: float = 0.5) -> NucleiAgreement:
    """Match the nuclei of two instance maps of the same ``(H, W)`` image (0 background, any positive ids).

    ``reference_types`` / ``candidate_types``: type maps of the same shape (a nucleus's type is the most common
    type under it), compared for the matched pairs; without them every pair counts as the same type."""
    reference, candidate = np.asarray(reference).astype(np.int64), np.asarray(candidate).astype(np.int64)
    if reference.shape != candidate.shape:
        raise ValueError(f"the instance maps differ in shape: {reference.shape} and {candidate.shape}")
    ref_ids, ref_index = np.unique(reference, return_inverse=True)
    cand_ids, cand_index = np.unique(candidate, return_inverse=True)
    ref_index, cand_index = ref_index.reshape(-1), cand_index.reshape(-1)
    ref_area = np.bincount(ref_index, minlength=len(ref_ids))
    cand_area = np.bincount(cand_index, minlength=len(cand_ids))
    both = (reference.reshape(-1) > 0) & (candidate.reshape(-1) > 0)
    pairs, overlap = np.unique(ref_index[both] * len(cand_ids) + cand_index[both], return_counts=True)
    r, c = pairs // len(cand_ids), pairs % len(cand_ids)
    union = ref_area[r] + cand_area[c] - overlap
    pair_iou = overlap / union
    keep = pair_iou >= iou
    r, c, pair_iou = r[keep], c[keep], pair_iou[keep]
    # above 0.5 a nucleus has at most one such partner; at exactly 0.5 it may tie: keep each side's best pair once
    order = np.argsort(-pair_iou, kind="stable")
    order = order[np.sort(np.unique(r[order], return_index=True)[1])]
    order = order[np.sort(np.unique(c[order], return_index=True)[1])]
    r, c, pair_iou = r[order], c[order], pair_iou[order]
    n_ref, n_cand = int((ref_ids > 0).sum()), int((cand_ids > 0).sum())
    same = 1.0
    if len(r) and reference_types is not None and candidate_types is not None:
        same = float(np.mean(_types(reference_types, ref_index, len(ref_ids))[r]
                             == _types(candidate_types, cand_index, len(cand_ids))[c]))
    matched = len(r)
    return NucleiAgreement(n_ref, n_cand, matched, matched / n_ref if n_ref else 1.0,
                           matched / n_cand if n_cand else 1.0, same,
                           float(pair_iou.mean()) if matched else 1.0, iou)


def _types(type_map: np.ndarray, index: np.ndarray, count: int) -> np.ndarray:
    """The most common type under each instance (by its index into the unique ids)."""
    types = np.asarray(type_map).astype(np.int64).reshape(-1)
    if types.shape != index.shape:
        raise ValueError("a type map differs in shape from its instance map")
    votes = np.zeros((count, int(types.max()) + 1), np.int64)
    np.add.at(votes, (index, types), 1)
    return votes.argmax(1)
