"""Train and evaluate variants of a bundle on the same split and tabulate their per-case Dice side by side."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping

from shared.writers.tables import write_csv, write_json

__all__ = ["compare_variants"]

logger = logging.getLogger(__name__)


def compare_variants(
    train_config: str,
    evaluate_config: str,
    variants: Mapping[str, Mapping],
    overrides: Mapping | None = None,
    output_dir: str = "compare",
    result_name: str = "per_patient_dice",
) -> dict:
    """For each variant: ``run training`` with ``train_config`` then ``run`` with ``[train_config, evaluate_config]``,
    each with ``{**overrides, **variant}`` and the variant's own ``ckpt_dir``/``output_dir`` under ``output_dir``.
    The split is the configs' own (same seed, same cases). Writes ``comparison.csv``/``.json``: Dice per case and
    the mean for each variant."""
    from monai.bundle import run

    results = {}
    for name, variant in variants.items():
        folder = os.path.join(output_dir, name)
        args = {**(overrides or {}), **variant, "ckpt_dir": os.path.join(folder, "models"),
                "output_dir": os.path.join(folder, "eval")}
        logger.info(f"variant {name}: training with {dict(variant)}")
        run(run_id="training", config_file=train_config, **args)
        run(config_file=[train_config, evaluate_config], **args)
        with open(os.path.join(args["output_dir"], f"{result_name}.json")) as f:
            results[name] = json.load(f)
    cases = sorted({c for r in results.values() for c in r["per_case"]})
    rows = [[case, *(f"{r['per_case'].get(case, float('nan')):.4f}" for r in results.values())] for case in cases]
    rows += [[name, *(f"{r[f'{name}_dice']:.4f}" for r in results.values())] for name in ("mean", "micro")]
    write_csv(os.path.join(output_dir, "comparison.csv"), ["case", *results], rows)
    summary = {name: {"mean_dice": r["mean_dice"], "micro_dice": r["micro_dice"], "per_case": r["per_case"]}
               for name, r in results.items()}
    write_json(os.path.join(output_dir, "comparison.json"), summary)
    logger.info("comparison (mean Dice over test patients): "
                + ", ".join(f"{n} {r['mean_dice']:.4f}" for n, r in results.items()))
    return summary
