"""One bundle's benchmark table, in its own process (every bundle's code is the package ``scripts``).

    python -m benchmarks.table NAME [--quick] [--repeats N] [--results_dir DIR]
"""

from __future__ import annotations

import argparse
import importlib
import json
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import torch

from benchmarks.harness import Row, compare, compute_share, count_flops, machine, matmul_peak_flops, peak_rss_mb, write_table

RESULTS = Path(__file__).resolve().parent / "results"
# bundle -> module of benchmarks.bundles
MODULES = {
    "brats_mri_slice_segmentation": "brats",
    "ispy2_breast_mri_vae_augmentation": "ispy2",
    "hipmri_pelvis_vqvae": "hipmri",
    "babyai_infant_brain_t2w_sr": "babyai",
    "pathology_ihc_to_he_hovernet": "pathology",
}


def memory_probe(bundle: str, quick: bool, workdir: Path, backend: str = "torch") -> Callable[[str], float | None]:
    """``side -> MB``: the peak memory that one call of the inference row's ``side`` adds, each measured in a fresh
    process (``--peak_memory_of``), since this process's allocator keeps what earlier calls freed."""

    def probe(side: str) -> float | None:
        command = [sys.executable, "-m", "benchmarks.table", bundle, "--peak_memory_of", side, "--workdir", str(workdir),
                   "--backend", backend]
        result = subprocess.run(command + (["--quick"] if quick else []), capture_output=True, text=True)
        lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
        if result.returncode != 0 or not lines:
            raise RuntimeError(f"peak memory of {bundle}'s {side} failed:\n{result.stderr[-3000:]}")
        return json.loads(lines[-1])["peak_mb"]

    return probe


def inference_row(module: ModuleType, bundle: str, quick: bool, repeats: int, workdir: Path,
                  backend: str = "torch", flops: int | None = None) -> Row:
    """The ``inference`` row: ``module.inference_contenders`` timed, outputs compared, peak memory of each side,
    the FLOPs of the bundle's side (counted in one more call; ``flops`` gives them where PyTorch cannot see the
    work); with ``backend="onnxruntime"``, the ``inference_onnxruntime`` row (the config's ``--backend
    onnxruntime``)."""
    contenders = module.inference_contenders(quick, workdir, backend=backend)
    name = "inference" if backend == "torch" else f"inference_{backend}"
    description = contenders.description + ("" if backend == "torch" else f"; the network run by --backend {backend}")
    row = compare(name, description, contenders.bundle, contenders.reference, goal=3.0,
                  repeats=repeats, check=contenders.check, memory=memory_probe(bundle, quick, workdir, backend))
    row.extra["flops"] = flops if flops is not None else count_flops(contenders.bundle)
    return row


def add_compute_shares(rows: list[Row], peak: float) -> None:
    """Beside every row that counted its FLOPs: the FLOP/s its bundle side achieved and their share of ``peak``."""
    for row in rows:
        if row.extra.get("flops"):
            seconds = row.bundle_median
            row.extra.update(compute_share(row.extra["flops"], seconds, peak))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("bundle", choices=sorted(MODULES))
    ap.add_argument("--quick", action="store_true", help="tiny demo data, 1 repeat: checks that the rows run")
    ap.add_argument("--repeats", type=int, default=None, help="timed repeats a contender (default 3; quick: 1)")
    ap.add_argument("--results_dir", type=Path, default=RESULTS)
    ap.add_argument("--peak_memory_of", choices=("bundle", "reference"), help=argparse.SUPPRESS)
    ap.add_argument("--workdir", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--backend", default="torch", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    repeats = args.repeats or (1 if args.quick else 3)
    module = importlib.import_module(f"benchmarks.bundles.{MODULES[args.bundle]}")
    if args.peak_memory_of:
        contenders = module.inference_contenders(args.quick, args.workdir, backend=args.backend)
        _, peak = peak_rss_mb(getattr(contenders, args.peak_memory_of))
        print(json.dumps({"peak_mb": peak}))
        return
    info = machine()
    # the machine's limit, measured in this run: the fastest large fp32 matrix product
    device = "cuda" if torch.cuda.is_available() else "cpu"
    info["peak_fp32_flops_per_s"] = matmul_peak_flops(device, size=2048 if args.quick else 4096)
    with tempfile.TemporaryDirectory(prefix=f"benchmark_{args.bundle}_") as work:
        rows = module.rows(args.quick, repeats, Path(work))
        flops = None  # counted on the torch row; ONNX Runtime does the same work where PyTorch cannot count it
        for i, backend in enumerate(getattr(module, "BACKENDS", ("torch",))):
            row = inference_row(module, args.bundle, args.quick, repeats, Path(work), backend, flops)
            flops = row.extra["flops"]
            rows.insert(2 + i, row)
    add_compute_shares(rows, info["peak_fp32_flops_per_s"])
    command = f"python -m benchmarks --bundle {args.bundle}" + (" --quick" if args.quick else "")
    md, js = write_table(args.results_dir, args.bundle, rows, info, command, args.quick)
    print(md.read_text())
    print(f"written: {md}, {js}")


if __name__ == "__main__":
    main()
