"""Speed of every bundle: one table a bundle, printed and written to ``benchmarks/results/<bundle>.{md,json}``.

    python -m benchmarks [--bundle NAME] [--quick] [--repeats N] [--results_dir DIR]

Each table's rows compare the bundle's way with a reference measured in the same run, alternated, repeated; the
ratio is ``reference median / bundle median`` (higher is better for the bundle) beside its goal:

- ``trainer_overhead``: the bundle's trainer vs a bare PyTorch loop on the same in-memory batch (goal >= 0.95);
- ``data_pipeline``: pure compute vs a steady-state epoch with the configured dataset and loader (goal >= 0.90);
- ``inference``: the bundle's inference vs the study's own approach written plainly, with peak memory (goal >= 3);
- ``export_torchscript`` / ``export_onnxruntime``: an inference network exported vs eager (goal >= 1.5).

Each bundle runs in its own process; a bundle that fails is reported and the command exits non-zero at the end.
"""

from __future__ import annotations

import argparse
import subprocess
import sys

from benchmarks.table import MODULES, RESULTS


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bundle", action="append", choices=sorted(MODULES), help="this bundle only (repeatable)")
    ap.add_argument("--quick", action="store_true", help="tiny demo data, 1 repeat: checks that the rows run")
    ap.add_argument("--repeats", type=int, default=None, help="timed repeats a contender (default 3; quick: 1)")
    ap.add_argument("--results_dir", default=str(RESULTS))
    args = ap.parse_args(argv)
    failed = []
    for bundle in args.bundle or list(MODULES):
        command = [sys.executable, "-m", "benchmarks.table", bundle, "--results_dir", args.results_dir]
        command += ["--quick"] if args.quick else []
        command += ["--repeats", str(args.repeats)] if args.repeats else []
        if subprocess.run(command).returncode != 0:
            failed.append(bundle)
    if failed:
        print(f"benchmarks failed for: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
