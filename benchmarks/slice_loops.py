"""Inference contenders for bundles whose inferer already follows the study's slice preparation in batches: the
bundle's inferer against the same inferer one slice a forward pass (the study's loop)."""

from __future__ import annotations

import torch
from monai.bundle import ConfigParser

from benchmarks.harness import Contenders

__all__ = ["batched_vs_one_slice"]


def batched_vs_one_slice(parser: ConfigParser, inputs: torch.Tensor, what: str, inner_id: str = "slice_inferer"
                         ) -> Contenders:
    """``inference.json``'s ``inferer`` (batched slices, ``inference_mode``, its ``backend``) against a fresh copy of
    its inner slice inferer ``inner_id`` with ``batch_size`` 1 under ``no_grad``, both on ``inputs``; ``what``
    describes the inputs in the row."""
    network = parser.get_parsed_content("network").eval()
    inferer = parser.get_parsed_content("inferer")
    study_inferer = parser.get_parsed_content(inner_id, instantiate=True, lazy=False)
    study_inferer.batch_size = 1

    def bundle():
        with torch.inference_mode():
            return inferer(inputs, network)

    def study():
        with torch.no_grad():
            return study_inferer(inputs, network)

    return Contenders(f"{what}: inference.json's {type(study_inferer).__name__} ({inferer.batch_size} slices a batch, "
                      "inference_mode) vs the study's loop, one slice a forward pass", bundle, study,
                      lambda a, b: {"max_abs_diff": float((a - b).abs().max())})
