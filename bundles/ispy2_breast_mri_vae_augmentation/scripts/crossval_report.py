"""The cross-validated comparison's tables, paired statistics and plot."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence

import numpy as np
from scipy import stats

from shared.writers.tables import write_csv, write_json

__all__ = ["paired_difference", "write_crossval_report"]

logger = logging.getLogger(__name__)


def paired_difference(a: Sequence[float], b: Sequence[float]) -> dict:
    """``b - a`` paired: the mean difference, its 95 % confidence interval (Student t over the pairs) and the
    two-sided Wilcoxon signed-rank p-value (1.0 when every difference is 0; with 5 pairs it cannot go below 0.0625).
    Pairs with a missing value (a patient set aside in one variant) are left out."""
    d = np.asarray(b, dtype=float) - np.asarray(a, dtype=float)
    d = d[np.isfinite(d)]
    mean = float(d.mean())
    if len(d) < 2:
        return {"pairs": len(d), "mean_difference": mean, "ci95": None, "wilcoxon_p": None}
    half = float(stats.t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / np.sqrt(len(d)))
    p = 1.0 if not np.any(d) else float(stats.wilcoxon(d).pvalue)
    return {"pairs": len(d), "mean_difference": mean, "ci95": [mean - half, mean + half], "wilcoxon_p": p}


def _plot(per_fold: dict[str, list[float]], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(per_fold)
    fig, ax = plt.subplots(figsize=(1.8 + 1.6 * len(names), 4))
    ax.boxplot([per_fold[n] for n in names], widths=0.5, showfliers=False)
    ax.set_xticks(range(1, len(names) + 1), names)
    for fold in range(len(per_fold[names[0]])):
        values = [per_fold[n][fold] for n in names]
        ax.plot(range(1, len(names) + 1), values, "o-", color="0.4", alpha=0.6, markersize=4)
    ax.set_ylabel("test Dice (mean over the fold's patients)")
    ax.set_title(f"{len(per_fold[names[0]])} patient folds; lines join a fold's variants")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_crossval_report(results: Sequence[dict], variants: Sequence[str], folds: int, output_dir: str) -> dict:
    """From the ``(fold, variant)`` results (``fold``, ``variant``, ``per_case`` Dice, ``mean_dice``), write to
    ``output_dir``: ``crossval_per_fold.csv``, ``crossval_per_patient.csv``, ``crossval.json`` (per variant the mean
    and sd over folds and the per-fold Dice; ``paired``: the second variant minus the first, per fold; ``paired_all``:
    every later variant minus the first, per fold and per patient), ``crossval.md`` and ``crossval.png``."""
    by = {(r["variant"], r["fold"]): r for r in results}
    per_fold = {v: [float(by[v, f]["mean_dice"]) for f in range(folds)] for v in variants}
    patients = sorted({(f, c) for (v, f), r in by.items() for c in r["per_case"]})
    per_patient = {v: [float(by[v, f]["per_case"].get(c, np.nan)) for f, c in patients] for v in variants}
    summary: dict = {
        "folds": folds,
        "variants": {v: {"mean_dice": float(np.mean(d)), "sd_dice": float(np.std(d, ddof=1)) if folds > 1 else 0.0,
                         "per_fold": d} for v, d in per_fold.items()},
    }
    first = variants[0]
    summary["paired_all"] = {
        f"{v} - {first}": {"per_fold": paired_difference(per_fold[first], per_fold[v]),
                           "per_patient": paired_difference(per_patient[first], per_patient[v])}
        for v in variants[1:]
    }
    if len(variants) > 1:
        summary["paired"] = {"difference": f"{variants[1]} - {first}",
                             **summary["paired_all"][f"{variants[1]} - {first}"]["per_fold"]}
    write_csv(os.path.join(output_dir, "crossval_per_fold.csv"), ["fold", "test_patients", *variants],
              ([fold, len(by[first, fold]["per_case"]), *(f"{per_fold[v][fold]:.4f}" for v in variants)]
               for fold in range(folds)))
    write_csv(os.path.join(output_dir, "crossval_per_patient.csv"), ["fold", "patient", *variants],
              ([fold, case, *(f"{per_patient[v][i]:.4f}" for v in variants)] for i, (fold, case) in enumerate(patients)))
    write_json(os.path.join(output_dir, "crossval.json"), summary)
    with open(os.path.join(output_dir, "crossval.md"), "w") as f:
        f.write(_markdown(summary, variants))
    _plot(per_fold, os.path.join(output_dir, "crossval.png"))
    logger.info("cross-validation (mean +- sd test Dice over folds): " + ", ".join(
        f"{v} {s['mean_dice']:.3f} +- {s['sd_dice']:.3f}" for v, s in summary["variants"].items()))
    return summary


def _markdown(summary: dict, variants: Sequence[str]) -> str:
    rows = ["| fold | " + " | ".join(variants) + " |", "|---" * (len(variants) + 1) + "|"]
    for fold in range(summary["folds"]):
        rows.append(f"| {fold} | " + " | ".join(f"{summary['variants'][v]['per_fold'][fold]:.3f}" for v in variants)
                    + " |")
    rows.append("| **mean +- sd** | " + " | ".join(
        f"**{summary['variants'][v]['mean_dice']:.3f} +- {summary['variants'][v]['sd_dice']:.3f}**" for v in variants)
                + " |")
    lines = ["\n".join(rows), ""]
    for name, paired in summary["paired_all"].items():
        for level in ("per_fold", "per_patient"):
            p = paired[level]
            ci = f"[{p['ci95'][0]:+.3f}, {p['ci95'][1]:+.3f}]" if p["ci95"] else "n/a"
            pv = f"{p['wilcoxon_p']:.3g}" if p["wilcoxon_p"] is not None else "n/a"
            lines.append(f"- {name}, {level.replace('_', ' ')} ({p['pairs']} pairs): mean difference "
                         f"{p['mean_difference']:+.3f}, 95 % CI {ci}, Wilcoxon p = {pv}")
    return "\n".join(lines) + "\n"
