"""The chained pipeline's nuclei counts against the demo's rule-based labels (the model card's count table).

The demo labels nuclei from the haematoxylin of the IHC image (:func:`scripts.demo.nuclei_instances`), so the count a
pipeline should find in a demo IHC image is that rule's count on the same image."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
from PIL import Image

from .demo import nuclei_instances

__all__ = ["compare_nuclei_counts"]

logger = logging.getLogger(__name__)


def compare_nuclei_counts(output_dir: str, images_dir: str, report_file: str | None = None) -> dict:
    """Per image of ``images_dir`` that the pipeline wrote ``<stem>_nuclei.json`` for in ``output_dir``: the
    predicted count beside the rule's count, and over the images the totals and the mean absolute relative error.
    Writes ``report_file`` (default ``<output_dir>/nuclei_counts.json``) and returns its content."""
    rows = []
    for image_file in sorted(Path(images_dir).glob("*.png")):
        nuclei_file = Path(output_dir) / f"{image_file.stem}_nuclei.json"
        if not nuclei_file.is_file():
            continue
        with open(nuclei_file) as f:
            predicted = len(json.load(f)["nuclei"])
        labelled = int(nuclei_instances(np.asarray(Image.open(image_file).convert("RGB"))).max())
        rows.append({"image": image_file.name, "predicted": predicted, "labelled": labelled})
    if not rows:
        raise FileNotFoundError(f"no <stem>_nuclei.json in {output_dir} for the images of {images_dir}")
    errors = [abs(r["predicted"] - r["labelled"]) / max(r["labelled"], 1) for r in rows]
    report = {"images": len(rows), "predicted_total": sum(r["predicted"] for r in rows),
              "labelled_total": sum(r["labelled"] for r in rows),
              "mean_absolute_relative_error": float(np.mean(errors)), "per_image": rows}
    report_file = report_file or str(Path(output_dir) / "nuclei_counts.json")
    with open(report_file, "w") as f:
        json.dump(report, f, indent=2)
    logger.info("nuclei counted by the pipeline: %d, by the demo's rule: %d, over %d image(s); mean absolute "
                "relative error %.2f (%s)", report["predicted_total"], report["labelled_total"], len(rows),
                report["mean_absolute_relative_error"], report_file)
    return report
