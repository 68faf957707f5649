"""The prepared GPU check: every bundle's configs run on CUDA with AMP as the configs set it, step by step, each in a
process of its own, with a table of what passed, how fast and how much memory it took.

    python -m benchmarks.gpu_check [--bundle NAME] [--quick] [--device cuda|cpu] [--results_dir DIR] [--workdir DIR]

For each bundle (``gpu_steps`` of its ``benchmarks/bundles/<study>.py``): each train config for a few iterations
with one validation and one training-state save, then resumed from that state for one more epoch; evaluate; the
study's other runs (generate, synthesize); inference on demo cases, timed, its FLOPs counted and its outputs compared
with the same inference on the CPU with the same weights; each train config's multi-GPU stack under
``torchrun --nproc_per_node=1`` (NCCL on a GPU); the networks the bundle exports, as TorchScript on the device and
under ONNX Runtime. A failed step is reported with its error and the steps that need it are skipped; the command
exits non-zero if any step failed.

Without a GPU it says so and stops (exit 0). ``--device cpu`` runs the very same steps with the GPUs hidden, so
that the check's own code is known to work before GPU time is spent on it (a test runs it with ``--quick``).

Writes ``<results_dir>/gpu_check_<bundle>.md`` and ``.json``, and each step's log under ``<results_dir>/gpu_check_logs``.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from benchmarks.gpu_step import RESULT
from benchmarks.harness import machine, matmul_peak_flops
from benchmarks.table import MODULES, RESULTS

__all__ = ["Step", "train_and_resume", "torchrun_step", "main"]

REPO = Path(__file__).resolve().parents[1]
MULTI_GPU = str(REPO / "shared" / "configs" / "multi_gpu_train.json")
STEP_TIMEOUT_S = 900


@dataclass
class Step:
    """One row of the check. ``kind``: ``train`` / ``resume`` (a train config; ``resume`` must end at
    ``expect_iteration``), ``run`` (any other config stack), ``infer`` (an inference stack, also run on the CPU and
    compared: ``outputs`` are globs of its output files under ``output_dir``), ``torchrun`` (a train stack under
    ``torchrun --nproc_per_node=1``), ``export`` (``networks``: ``{net_id: weights file}``) or ``app`` (an
    application, ``python -m <app...>``, after ``prepare()``; skipped, with the reason, where ``app_requires`` does
    not import)."""

    name: str
    kind: str
    configs: list[str]
    overrides: dict[str, Any] = field(default_factory=dict)
    run_id: str = "run"
    needs: tuple[str, ...] = ()
    outputs: tuple[str, ...] = ()
    expect_iteration: int | None = None
    figures: Callable[[dict[str, Any]], dict[str, Any]] | None = None  # more figures from the step's outputs
    app: list[str] | None = None  # kind ``app``: ``python -m <app...>``, run when ``app_requires`` imports
    app_requires: str | None = None
    prepare: Callable[[], None] | None = None  # kind ``app``: makes its input


def train_and_resume(name: str, configs: list[str], overrides: dict[str, Any], iterations: int,
                     needs: tuple[str, ...] = ()) -> list[Step]:
    """A train stack for one epoch of ``iterations`` (one validation, a training-state save at its end), then the
    same stack resumed from that state (``--resume_checkpoint latest``) for a second epoch."""
    run = {**overrides, "train#trainer#epoch_length": iterations, "train#trainer#max_epochs": 1, "val_interval": 1}
    resumed = {**run, "train#trainer#max_epochs": 2, "resume_checkpoint": "latest"}
    return [Step(name, "train", configs, run, "training", needs),
            Step(f"{name} resumed", "resume", configs, resumed, "training", (name,), expect_iteration=2 * iterations)]


def torchrun_step(name: str, configs: list[str], overrides: dict[str, Any], iterations: int,
                  needs: tuple[str, ...] = (), variant: tuple[str, ...] = ()) -> Step:
    """The multi-GPU stack of a train stack: ``configs``, the shared multi-GPU config, then the bundle's ``variant``
    of it, if any."""
    stack = [*configs, MULTI_GPU, *variant]
    run = {**overrides, "train#trainer#epoch_length": iterations, "train#trainer#max_epochs": 1, "val_interval": 1}
    return Step(name, "torchrun", stack, run, "training", needs)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _environment(device: str) -> dict[str, str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": os.pathsep.join(
        [str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])}
    if device == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = ""  # the very same steps, with no GPU to be found
    return env


def _launch(bundle: str, step: Step, overrides: dict[str, Any], device: str, log: Path,
            count_flops: bool = False, quick: bool = False) -> dict[str, Any]:
    """Runs ``step`` in its own process (torchrun's for ``torchrun``); its result line, or the failure."""
    kind = {"infer": "run", "torchrun": "train"}.get(step.kind, step.kind)
    spec = {"bundle": bundle, "kind": kind, "configs": step.configs, "run_id": step.run_id,
            "overrides": overrides, "count_flops": count_flops, "quick": quick}
    command = [sys.executable, "-m", "benchmarks.gpu_step", json.dumps(spec)]
    if step.kind == "torchrun":
        command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=1",
                   f"--master_port={_free_port()}", *command[1:]]
    log.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    try:
        done = subprocess.run(command, cwd=REPO, env=_environment(device), stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, timeout=STEP_TIMEOUT_S)
        output, returncode = done.stdout, done.returncode
    except subprocess.TimeoutExpired as e:
        output, returncode = (e.stdout or b"").decode(errors="replace") if isinstance(e.stdout, bytes) else \
            (e.stdout or ""), None
    log.write_text(output)
    lines = [line for line in output.splitlines() if line.startswith(RESULT)]
    result = json.loads(lines[-1][len(RESULT):]) if lines else {"ok": False}
    result["wall_s"] = round(time.perf_counter() - start, 1)
    if returncode is None:
        result.update(ok=False, error=f"timed out after {STEP_TIMEOUT_S} s")
    elif returncode != 0 and result.get("ok", False):
        result.update(ok=False, error=f"exit code {returncode} after the step finished (see {log})")
    elif not lines:
        tail = [line for line in output.splitlines() if line.strip()][-3:]
        result["error"] = f"exit code {returncode}, no result line: " + " | ".join(tail)[-1000:]
    return result


def _read_output(path: Path) -> np.ndarray:
    if path.name.endswith((".nii", ".nii.gz")):
        import nibabel as nib

        return np.asarray(nib.load(path).dataobj)
    if path.suffix == ".npy":
        return np.load(path)
    if path.suffix in (".tif", ".tiff"):
        import tifffile

        return tifffile.imread(path)
    from PIL import Image

    with Image.open(path) as image:
        return np.asarray(image)


def agreement(device_dir: Path, cpu_dir: Path, patterns: tuple[str, ...]) -> dict[str, Any]:
    """How the device's outputs agree with the CPU's: the files compared, for integer outputs (labels, type maps,
    8-bit images) the smallest share of equal values, for float outputs the largest absolute difference."""
    files = sorted(f for pattern in patterns for f in device_dir.glob(pattern))
    if not files:
        return {"agreement_error": f"no output matches {list(patterns)} under {device_dir}"}
    equal, difference = [], []
    for ours in files:
        theirs = cpu_dir / ours.relative_to(device_dir)
        if not theirs.is_file():
            return {"agreement_error": f"the CPU run wrote no {theirs.name}"}
        a, b = _read_output(ours), _read_output(theirs)
        if a.shape != b.shape:
            return {"agreement_error": f"{ours.name}: shape {a.shape} on the device, {b.shape} on the CPU"}
        if np.issubdtype(a.dtype, np.integer) or a.dtype == bool:
            equal.append(float((a == b).mean()))
        else:
            difference.append(float(np.abs(a.astype(np.float64) - b.astype(np.float64)).max()))
    figures: dict[str, Any] = {"files_compared": len(files)}
    if equal:
        figures["min_equal_fraction"] = round(min(equal), 5)
    if difference:
        figures["max_abs_diff"] = max(difference)
    return figures


def run_app(step: Step, device: str, log: Path) -> dict[str, Any]:
    """An ``app`` step: skipped (ok, with the reason) where its SDK does not import, else prepared and run."""
    probe = subprocess.run([sys.executable, "-c", f"import {step.app_requires}"], env=_environment(device),
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if probe.returncode != 0:
        reason = ([line for line in probe.stdout.splitlines() if line.strip()] or ["import failed"])[-1]
        return {"ok": True, "skipped": f"{step.app_requires} does not import ({reason[:200]})"}
    if step.prepare is not None:
        step.prepare()
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", *step.app], cwd=REPO, env=_environment(device),
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=STEP_TIMEOUT_S)
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text(done.stdout)
    result: dict[str, Any] = {"ok": done.returncode == 0, "wall_s": round(time.perf_counter() - start, 1)}
    if done.returncode != 0:
        tail = [line for line in done.stdout.splitlines() if line.strip()][-3:]
        result["error"] = f"exit code {done.returncode}: " + " | ".join(tail)[-1000:]
    if step.figures is not None and result["ok"]:
        result.update(step.figures(result))
    return result


def run_step(bundle: str, step: Step, device: str, logs: Path, peaks: dict[str, float],
             quick: bool = False) -> dict[str, Any]:
    """One step, with the figures its kind adds: the resumed iteration checked, the CPU agreement of inference, the
    share of the machine's peak of inference and exports."""
    if step.kind == "app":
        return run_app(step, device, logs / f"{step.name.replace(' ', '_')}.log")
    result = _launch(bundle, step, step.overrides, device, logs / f"{step.name}.log",
                     count_flops=step.kind == "infer", quick=quick)
    if step.kind == "resume" and result.get("ok"):
        if result.get("final_iteration") != step.expect_iteration or not result.get("resumed_at_iteration"):
            result.update(ok=False, error=f"resumed at iteration {result.get('resumed_at_iteration')} and ended at "
                                          f"{result.get('final_iteration')}, expected {step.expect_iteration}")
    if step.kind == "infer" and result.get("ok"):
        output_dir = Path(str(step.overrides["output_dir"]))
        cpu_dir = output_dir.with_name(output_dir.name + "_cpu")
        cpu = _launch(bundle, step, {**step.overrides, "output_dir": str(cpu_dir)}, "cpu",
                      logs / f"{step.name} on the CPU.log")
        result["cpu_seconds_per_case"] = cpu.get("seconds_per_case")
        result.update(agreement(output_dir, cpu_dir, step.outputs) if cpu.get("ok") else
                      {"agreement_error": f"the CPU run failed: {cpu.get('error')}"})
        _add_share(result, result.get("flops"), result.get("seconds"), peaks)
    if step.figures is not None and result.get("ok"):
        result.update(step.figures(step.overrides))
    if step.kind == "export" and result.get("ok"):
        for row in result["networks"].values():
            _add_share(row, row["flops"], row["eager_s"], peaks)
    return result


def _add_share(figures: dict[str, Any], flops: float | None, seconds: float | None, peaks: dict[str, float]) -> None:
    """FLOP/s achieved and its share of the peak of the precision the work runs in (AMP: half on a GPU)."""
    if not flops or not seconds:
        return
    achieved = flops / seconds
    figures["achieved_flops_per_s"] = achieved
    figures["compute_share"] = round(achieved / peaks["fp32"], 4)
    if "bf16" in peaks:
        figures["compute_share_of_bf16_peak"] = round(achieved / peaks["bf16"], 4)


def measure_peaks(device: str, quick: bool) -> dict[str, float]:
    """The machine's matrix-product peak in this run: fp32 on the CPU; fp32 (TF32 off) and bf16 on a GPU."""
    size = 2048 if quick else (8192 if device == "cuda" else 4096)
    peaks = {"fp32": matmul_peak_flops(device, torch.float32, size)}
    if device == "cuda":
        peaks["bf16"] = matmul_peak_flops(device, torch.bfloat16, size)
        torch.cuda.empty_cache()
    return peaks


def _number(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 100 else f"{value:.0f}"
    return str(value)


def markdown(bundle: str, rows: list[dict[str, Any]], info: dict[str, Any], command: str) -> str:
    peaks = ", ".join(f"{k} {v / 1e12:.3g} TFLOP/s" for k, v in info["peak_flops_per_s"].items())
    lines = [f"### `{bundle}` on {info['device']}", "",
             f"`{command}`: {info['cores']} CPU cores, torch {info['torch']}; matrix-product peak {peaks}; "
             f"{info['bundle_seconds']:.0f} s in all", "",
             "| step | configs | result | iterations/s | peak memory (MB) | s/case (CPU s/case) | agreement with CPU | "
             "achieved FLOP/s (share of peak) | notes |", "|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        result = (f"skipped: {row['skipped']}" if row.get("skipped") else "pass") if row.get("ok") else \
            f"**FAIL**: {row.get('error', '')}".replace("|", "/").replace("\n", " ")
        per_case = _number(row.get("seconds_per_case"))
        if row.get("cpu_seconds_per_case") is not None:
            per_case += f" ({_number(row['cpu_seconds_per_case'])})"
        agree = row.get("agreement_error") or ", ".join(
            f"{k} {_number(row[k])}" for k in ("min_equal_fraction", "max_abs_diff") if k in row)
        share = (f"{row['achieved_flops_per_s'] / 1e9:.3g} GFLOP/s ({row['compute_share']:.1%})"
                 if "compute_share" in row else "-")
        notes = [f"{k} {_number(row[k])}" for k in ("iterations_run", "resumed_at_iteration", "validations",
                                                    "states_saved", "cases", "megapixels", "seconds_per_megapixel",
                                                    "seg_files",
                                                    "wall_s") if row.get(k) is not None]
        for net_id, net in (row.get("networks") or {}).items():
            notes.append(f"{net_id} {tuple(net['input'])}: eager {_number(net['eager_s'])} s, TorchScript "
                         f"({net['torchscript']}) {_number(net['torchscript_s'])} s (max diff "
                         f"{_number(net['torchscript_max_abs_diff'])}), ONNX Runtime "
                         + (f"{_number(net['onnxruntime_s'])} s on the CPU (max diff "
                            f"{_number(net['onnxruntime_max_abs_diff'])})" if "onnxruntime_s" in net else
                            net.get("onnxruntime_error", "-"))
                         + (f", {net['achieved_flops_per_s'] / 1e9:.3g} GFLOP/s eager ({net['compute_share']:.1%})"
                            if "compute_share" in net else ""))
        lines.append(f"| {row['step']} | {' + '.join(Path(c).name for c in row['configs'])} | {result} | "
                     f"{_number(row.get('iterations_per_s'))} | {_number(row.get('peak_memory_mb'))} | {per_case} | "
                     f"{agree or '-'} | {share} | {'; '.join(notes)} |")
    return "\n".join(lines) + "\n"


def check_bundle(bundle: str, quick: bool, device: str, work: Path, results_dir: Path,
                 peaks: dict[str, float]) -> tuple[list[dict[str, Any]], float]:
    module = importlib.import_module(f"benchmarks.bundles.{MODULES[bundle]}")
    steps: list[Step] = module.gpu_steps(quick, work)
    logs = results_dir / "gpu_check_logs" / bundle
    rows, failed = [], set()
    start = time.perf_counter()
    for step in steps:
        missing = [n for n in step.needs if n in failed]
        if missing:
            result = {"ok": False, "error": f"skipped: {', '.join(missing)} failed"}
        else:
            print(f"[gpu_check] {bundle}: {step.name} ...", flush=True)
            result = run_step(bundle, step, device, logs, peaks, quick)
        if not result.get("ok"):
            failed.add(step.name)
        print(f"[gpu_check] {bundle}: {step.name}: {'pass' if result.get('ok') else 'FAIL ' + result.get('error', '')}",
              flush=True)
        rows.append({"step": step.name, "kind": step.kind, "configs": step.configs, **result})
    return rows, time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.gpu_check", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bundle", action="append", choices=sorted(MODULES), help="this bundle only (repeatable)")
    ap.add_argument("--quick", action="store_true", help="tiny demo data and sizes: checks that every step runs")
    ap.add_argument("--device", choices=("cuda", "cpu"), default="cuda",
                    help="cuda (default; skipped without a GPU) or cpu (the same steps with the GPUs hidden)")
    ap.add_argument("--results_dir", type=Path, default=RESULTS)
    ap.add_argument("--workdir", type=Path, help="checkpoints and outputs (default: a temporary folder)")
    args = ap.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("gpu_check skipped: no CUDA GPU is visible here (torch.cuda.is_available() is False). Run it on a GPU "
              "machine, or run the same steps on the CPU with `python -m benchmarks.gpu_check --device cpu --quick`.")
        return 0
    bundles = args.bundle or list(MODULES)
    info = machine()
    if args.device == "cpu":
        info["device"] = "cpu (GPUs hidden)"
    info["peak_flops_per_s"] = measure_peaks(args.device, args.quick)
    command = "python -m benchmarks.gpu_check" + "".join(f" --bundle {b}" for b in args.bundle or []) + \
        (" --quick" if args.quick else "") + (" --device cpu" if args.device == "cpu" else "")
    failed = []
    with tempfile.TemporaryDirectory(prefix="gpu_check_") as temporary:
        root = args.workdir or Path(temporary)
        for bundle in bundles:
            rows, seconds = check_bundle(bundle, args.quick, args.device, root / bundle, args.results_dir,
                                         info["peak_flops_per_s"])
            info["bundle_seconds"] = seconds
            text = markdown(bundle, rows, info, command)
            args.results_dir.mkdir(parents=True, exist_ok=True)
            (args.results_dir / f"gpu_check_{bundle}.md").write_text(text)
            document = {"bundle": bundle, "command": command, "quick": args.quick, "machine": info, "rows": rows}
            (args.results_dir / f"gpu_check_{bundle}.json").write_text(json.dumps(document, indent=2, default=str))
            print(text, flush=True)
            if not all(row.get("ok") for row in rows):
                failed.append(bundle)
    if failed:
        print(f"gpu_check failed for: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
