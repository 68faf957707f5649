"""Inference contenders for bundles whose inferer follows the study's slice preparation in batches: the bundle's
inferer (batched, vectorised, ``inference_mode``, its ``backend``) against the study's loop written plainly, one
slice prepared, predicted and restored at a time."""

from __future__ import annotations

from collections.abc import Callable

import torch
from monai.bundle import ConfigParser

from benchmarks.harness import Contenders

__all__ = ["batched_vs_study_loop"]


def batched_vs_study_loop(parser: ConfigParser, inputs: torch.Tensor, what: str,
                          study_loop: Callable[[torch.Tensor, torch.nn.Module], torch.Tensor]) -> Contenders:
    """``inference.json``'s ``inferer`` against ``study_loop(inputs, network)``, both on ``inputs`` with the
    config's network; ``what`` describes the inputs in the row."""
    network = parser.get_parsed_content("network").eval()
    inferer = parser.get_parsed_content("inferer")

    def bundle():
        with torch.inference_mode():
            return inferer(inputs, network)

    def study():
        with torch.no_grad():
            return study_loop(inputs, network)

    return Contenders(f"{what}: inference.json's {type(inferer.inferer).__name__} ({inferer.batch_size} slices a "
                      "batch, prepared together, inference_mode) vs the study's loop, one slice prepared, predicted "
                      "and restored at a time", bundle, study,
                      lambda a, b: {"max_abs_diff": float((a - b).abs().max())})
