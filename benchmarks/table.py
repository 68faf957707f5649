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

from benchmarks.harness import Row, compare, machine, peak_rss_mb, write_table

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
                  backend: str = "torch") -> Row:
    """The ``inference`` row: ``module.inference_contenders`` timed, outputs compared, peak memory of each side;
    with ``backend="onnxruntime"``, the ``inference_onnxruntime`` row (the config's ``--backend onnxruntime``)."""
    contenders = module.inference_contenders(quick, workdir, backend=backend)
    name = "inference" if backend == "torch" else f"inference_{backend}"
    description = contenders.description + ("" if backend == "torch" else f"; the network run by --backend {backend}")
    return compare(name, description, contenders.bundle, contenders.reference, goal=3.0,
                   repeats=repeats, check=contenders.check, memory=memory_probe(bundle, quick, workdir, backend))


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
    with tempfile.TemporaryDirectory(prefix=f"benchmark_{args.bundle}_") as work:
        rows = module.rows(args.quick, repeats, Path(work))
        for i, backend in enumerate(getattr(module, "BACKENDS", ("torch",))):
            rows.insert(2 + i, inference_row(module, args.bundle, args.quick, repeats, Path(work), backend))
    command = f"python -m benchmarks --bundle {args.bundle}" + (" --quick" if args.quick else "")
    md, js = write_table(args.results_dir, args.bundle, rows, machine(), command, args.quick)
    print(md.read_text())
    print(f"written: {md}, {js}")


if __name__ == "__main__":
    main()
