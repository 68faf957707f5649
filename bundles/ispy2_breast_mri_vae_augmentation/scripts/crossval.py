"""Cross-validate variants of the U-Net on identical patient folds: each (fold, variant) trains and evaluates in its
own folder, finished ones are not run again, and several can run side by side in separate processes."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context

from .crossval_report import write_crossval_report

__all__ = ["cross_validate", "run_fold"]

logger = logging.getLogger(__name__)
RESULT_FILE = "fold_result.json"


def _write_json(data: dict, path: str) -> None:
    partial = f"{path}.partial"
    with open(partial, "w") as f:
        json.dump(data, f, indent=2)
    os.replace(partial, path)


def run_fold(
    fold: int,
    folds: int,
    name: str,
    variant: Mapping,
    train_config: str | Sequence[str],
    evaluate_config: str,
    overrides: Mapping,
    output_dir: str,
    result_name: str = "per_patient_dice",
    threads: int | None = None,
) -> dict:
    """Fold ``fold`` of variant ``name`` in ``<output_dir>/fold_<fold>/<name>``: the variant's ``pretrain_configs``
    (each a file or a stack of files, e.g. the VAE's ``[train.json, train_vae.json]``) trained first on the same
    fold, then ``train_config`` (a file, or files to stack, e.g. with ``study_unet.json``) trained and evaluated with ``evaluate_config``, all with
    ``{**overrides, **variant}`` and this fold's split. A killed run resumes from its newest training state; a
    finished one (``fold_result.json`` written) is returned without running."""
    import torch
    from monai.bundle import run

    folder = os.path.join(output_dir, f"fold_{fold}", name)
    result_file = os.path.join(folder, RESULT_FILE)
    if os.path.isfile(result_file):
        logger.info(f"fold {fold} / {name}: already done ({result_file})")
        with open(result_file) as f:
            return json.load(f)
    if threads:
        torch.set_num_threads(threads)
    os.makedirs(folder, exist_ok=True)
    variant = dict(variant)
    pretrain_configs = variant.pop("pretrain_configs", [])
    args = {**overrides, **variant, "split#folds": folds, "split#fold": fold, "resume_checkpoint": "latest",
            "ckpt_dir": os.path.join(folder, "models"), "output_dir": os.path.join(folder, "eval")}
    train_configs = [train_config] if isinstance(train_config, str) else list(train_config)
    stacks = [[c] if isinstance(c, str) else list(c) for c in pretrain_configs]
    for config in [*stacks, train_configs]:
        # a finished training is not resumed
        marker = os.path.join(folder, "+".join(os.path.basename(c) for c in config) + ".done")
        if not os.path.isfile(marker):
            logger.info(f"fold {fold} / {name}: training with {', '.join(os.path.basename(c) for c in config)}")
            run(run_id="training", config_file=config, **args)
            open(marker, "w").close()
    run(config_file=[*train_configs, evaluate_config],
        **{k: v for k, v in args.items() if k != "resume_checkpoint"})
    with open(os.path.join(args["output_dir"], f"{result_name}.json")) as f:
        result = {"fold": fold, "variant": name, **json.load(f)}
    _write_json(result, result_file)
    return result


def cross_validate(
    train_config: str | Sequence[str],
    evaluate_config: str,
    variants: Mapping[str, Mapping],
    output_dir: str,
    folds: int = 5,
    overrides: Mapping | None = None,
    workers: int = 1,
    only_folds: Sequence[int] | None = None,
    selected: Sequence[str] | None = None,
) -> dict:
    """Every variant on every one of ``folds`` patient folds (the configs' split seed, so the folds and the network
    seeds are identical for all variants), then the per-fold and per-patient tables, the paired statistics and the
    plot (``crossval_report.write_crossval_report``). ``workers`` > 1 runs that many (fold, variant) jobs at once in
    separate processes, the cores shared between them; ``only_folds`` runs some folds only (and reports when all
    are done). ``selected`` names the variants to run (all by default), the first being the reference of the
    paired statistics."""
    if selected is not None:
        unknown = sorted(set(selected) - set(variants))
        if unknown:
            raise ValueError(f"unknown variant(s) {unknown}; defined: {sorted(variants)}.")
        variants = {name: variants[name] for name in selected}
    os.makedirs(output_dir, exist_ok=True)
    jobs = [(fold, name) for fold in (only_folds if only_folds is not None else range(folds)) for name in variants]
    common = {"folds": folds, "train_config": train_config, "evaluate_config": evaluate_config,
              "overrides": dict(overrides or {}), "output_dir": output_dir}
    if workers > 1:
        threads = max(1, (os.cpu_count() or 1) // workers)
        with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
            futures = [pool.submit(run_fold, fold, variant=variants[name], name=name, threads=threads, **common)
                       for fold, name in jobs]
            results = [f.result() for f in futures]
    else:
        results = [run_fold(fold, variant=variants[name], name=name, **common) for fold, name in jobs]
    finished = [os.path.join(output_dir, f"fold_{f}", n, RESULT_FILE) for f in range(folds) for n in variants]
    if not all(os.path.isfile(p) for p in finished):
        logger.info(f"{len(results)} fold run(s) done; the report is written when all {len(finished)} are.")
        return {}
    results = []
    for path in finished:
        with open(path) as f:
            results.append(json.load(f))
    return write_crossval_report(results, list(variants), folds, output_dir)
