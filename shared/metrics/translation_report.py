"""What the IHC -> H&E translation gives, for people: the test table with the identity baseline beside it, and
TensorBoard panels of CycleGAN's real, translated and reconstructed images."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Mapping, Sequence

import numpy as np
import torch
from monai.metrics import FIDMetric, PSNRMetric, SSIMMetric

from shared.metrics.epoch_report import EpochReport
from shared.networks.fid_inception import FIDInceptionV3

__all__ = ["FID_NOTE", "TranslationReport", "cyclegan_panels", "no_batch_images"]

logger = logging.getLogger(__name__)
FID_NOTE = "FID: not computed (no Inception weights were given: --fid_weights None)."
METRICS = ("ssim", "psnr")
# report section -> the image compared with the real H&E
COMPARISONS = {"translation": "pred", "identity_baseline": "image"}


def _mean_sd(values: Sequence[float]) -> dict[str, float]:
    return {"mean": float(np.mean(values)), "sd": float(np.std(values))}


class TranslationReport(EpochReport):
    """SSIM and PSNR of each translated image against the real H&E (``translation``) and, beside them, of the IHC
    image as it is against the same H&E (``identity_baseline``: what translation must beat), per case and over the
    cases. The evaluator's decollated outputs hold tiles (``pred_key``: translated, ``source_key``: the IHC input,
    ``label_key``: the real H&E, all on one scale, e.g. [0, 1]); a case's value is the mean over its tiles, which the
    batch's ``case_key`` groups. Writes ``<name>.json`` (summary and cases), ``<name>.csv`` (one row a case) and
    ``<name>.md`` (the model card's table). With ``fid_weights``, FID (MONAI's ``FIDMetric`` on the Inception-v3
    pool features of :class:`~shared.networks.fid_inception.FIDInceptionV3`) of the translated tiles and of the
    identity baseline against the real H&E tiles too; when those weights cannot be had, FID is reported as not
    computed, with the reason.

    Args:
        output_dir: folder of the three files.
        name: their name without suffix.
        data_range: the images' value range (1 for [0, 1]).
        pred_key, source_key, label_key: output keys of the translated image, the input and the target.
        case_key, her2_key: batch keys of the case name and of its HER2 level (``None`` if there is none).
        fid_weights: the FID Inception weights file, or a function that returns it (e.g. fetches it:
            ``shared.hub.ensure_url_weights``); ``None``: no FID.
    """

    csv_header = ("case", "her2", "tiles", "ssim", "psnr", "identity_ssim", "identity_psnr")

    def __init__(self, output_dir: str, name: str = "cyclegan_test_metrics", data_range: float = 1.0,
                 pred_key: str = "pred", source_key: str = "image", label_key: str = "label", case_key: str = "case",
                 her2_key: str | None = "her2", fid_weights: str | Callable[[], str] | None = None) -> None:
        super().__init__(output_dir, name)
        self.data_range = data_range
        self.keys = {"pred": pred_key, "image": source_key, "label": label_key}
        self.case_key, self.her2_key = case_key, her2_key
        self.ssim = SSIMMetric(spatial_dims=2, data_range=data_range)
        self.psnr = PSNRMetric(max_val=data_range)
        self.tiles: dict[str, list[dict]] = {}
        self.her2: dict[str, str | None] = {}
        self.fid_weights, self.fid_network, self.fid_source = fid_weights, None, None
        self.fid_problem: str | None = None if fid_weights is not None else FID_NOTE
        self.features: dict[str, list[torch.Tensor]] = {k: [] for k in self.keys}

    def reset(self) -> None:
        self.tiles, self.her2 = {}, {}
        self.features = {k: [] for k in self.keys}

    def _feature_network(self) -> FIDInceptionV3 | None:
        if self.fid_network is None and self.fid_problem is None:
            try:
                path = self.fid_weights() if callable(self.fid_weights) else self.fid_weights
                self.fid_network, self.fid_source = FIDInceptionV3(path), os.path.basename(str(path))
            except Exception as e:
                self.fid_problem = f"FID: not computed ({type(e).__name__}: {' '.join(str(e).split())[:400]})."
                logger.warning(self.fid_problem)
        return self.fid_network

    def _add_features(self, out: Mapping) -> None:
        network = self._feature_network()
        if network is None:
            return
        with torch.no_grad():
            for key in self.keys:
                image = self._image(out, key).clamp(0.0, self.data_range) / self.data_range
                self.features[key].append(network(image.to(next(network.parameters()).device)).cpu())

    def _image(self, output: Mapping, key: str) -> torch.Tensor:
        return torch.as_tensor(output[self.keys[key]]).detach().float().cpu()[None]

    def update(self, engine) -> None:
        batch = engine.state.batch if isinstance(engine.state.batch, list) else [{}] * len(engine.state.output)
        for item, out in zip(batch, engine.state.output):
            case = str(item.get(self.case_key, f"tile_{sum(map(len, self.tiles.values()))}"))
            label = self._image(out, "label")
            scores = {}
            for section, key in COMPARISONS.items():
                image = self._image(out, key)
                scores[section] = {"ssim": float(self.ssim(image, label).mean()),
                                   "psnr": float(self.psnr(image, label).mean())}
            self.tiles.setdefault(case, []).append(scores)
            self.her2[case] = item.get(self.her2_key) if self.her2_key else None
            self._add_features(out)

    def compute(self) -> dict:
        cases = [{"case": case, "her2": self.her2[case], "tiles": len(tiles),
                  **{section: {m: float(np.mean([t[section][m] for t in tiles])) for m in METRICS}
                     for section in COMPARISONS}}
                 for case, tiles in self.tiles.items()]
        summary = {section: {m: _mean_sd([c[section][m] for c in cases]) for m in METRICS}
                   for section in COMPARISONS} if cases else {}
        return {"num_cases": len(cases), "num_tiles": sum(c["tiles"] for c in cases), "data_range": self.data_range,
                **summary, "fid": self._fid(), "cases": cases}

    def _fid(self) -> dict | str:
        if not self.features["label"]:
            return self.fid_problem or "FID: not computed (no test tile)."
        real = torch.cat(self.features["label"])
        return {"translation": float(FIDMetric()(torch.cat(self.features["pred"]), real)),
                "identity_baseline": float(FIDMetric()(torch.cat(self.features["image"]), real)),
                "num_tiles": len(real), "weights": self.fid_source}

    def csv_rows(self, result: dict) -> Iterable[Sequence]:
        for c in result["cases"]:
            yield [c["case"], c["her2"] or "", c["tiles"], f"{c['translation']['ssim']:.4f}",
                   f"{c['translation']['psnr']:.3f}", f"{c['identity_baseline']['ssim']:.4f}",
                   f"{c['identity_baseline']['psnr']:.3f}"]

    @staticmethod
    def markdown(result: dict) -> str:
        labels = {"translation": "CycleGAN IHC -> H&E", "identity_baseline": "identity baseline (the IHC image as it is)"}
        rows = [f"| {labels[s]} | {result[s]['ssim']['mean']:.4f} | {result[s]['ssim']['sd']:.4f} | "
                f"{result[s]['psnr']['mean']:.2f} | {result[s]['psnr']['sd']:.2f} |" for s in COMPARISONS if s in result]
        return (f"Measured by `configs/evaluate_cyclegan.json` on {result['num_cases']} IHC / H&E test pair(s) "
                f"({result['num_tiles']} tiles at the network's input size; a pair's value is the mean of its tiles; "
                f"images on [0, {result['data_range']:g}]), against the real H&E:\n\n"
                "| | SSIM mean | SSIM sd | PSNR (dB) mean | PSNR (dB) sd |\n|---|---|---|---|---|\n"
                + "\n".join(rows) + f"\n\n{_fid_line(result['fid'])}\n")

    def summary(self, result: dict) -> str | None:
        if not result["num_cases"]:
            return None
        t, b = result["translation"], result["identity_baseline"]
        return (f"{self.name}: SSIM {t['ssim']['mean']:.4f} (identity baseline {b['ssim']['mean']:.4f}), PSNR "
                f"{t['psnr']['mean']:.2f} dB (baseline {b['psnr']['mean']:.2f} dB) over {result['num_cases']} pair(s)")


def _fid_line(fid: dict | str) -> str:
    if isinstance(fid, str):
        return fid
    return (f"FID against the real H&E tiles (MONAI's FIDMetric on Inception-v3 pool features, weights "
            f"`{fid['weights']}`, {fid['num_tiles']} tiles): CycleGAN {fid['translation']:.2f}, identity baseline "
            f"{fid['identity_baseline']:.2f}. FID is biased upward by few images: compare runs with the same number.")


def cyclegan_panels(
    output: Sequence[Mapping[str, torch.Tensor]],
    rows: Sequence[Sequence[str]] = (("real_A", "fake_B", "rec_A"), ("real_B", "fake_A", "rec_B")),
    value_range: tuple[float, float] = (-1.0, 1.0),
) -> list[torch.Tensor]:
    """One RGB panel (3xHxW on [0, 1]) per item of a ``shared.engines.cyclegan.CycleGANTrainer``'s decollated output:
    a row of images for each entry of ``rows``, by default real IHC | translated to H&E | back to IHC, and below it
    real H&E | translated to IHC | back to H&E. The ``output_transform`` of a ``TensorBoardImageHandler`` with
    ``max_channels`` 3."""
    low, high = value_range
    panels = []
    for item in output:
        grid = torch.cat([torch.cat([item[key].detach().float().cpu() for key in row], dim=-1) for row in rows], dim=-2)
        panels.append(((grid - low) / (high - low)).clamp(0, 1))
    return panels


def no_batch_images(batch) -> tuple[list[None], list[None]]:
    """``TensorBoardImageHandler``'s ``batch_transform`` where every panel comes from the output (see
    :func:`cyclegan_panels`): no input or label image."""
    return [None], [None]
