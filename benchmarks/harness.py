"""Timing two contenders fairly, and the table they make.

Every row of a bundle's table compares the bundle's way of doing something (``bundle``) with a reference way
(``reference``: a bare PyTorch loop, the pure compute, the study's own approach, eager PyTorch). Both run in the
same process, alternated (A B, B A, A B, ...) after one untimed warm-up each, so that a change of machine load hits
both; each row reports the two medians, their spread (min-max) and ``ratio = reference median / bundle median``:
higher is better for the bundle, whatever the row measures.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

__all__ = ["Contenders", "Row", "compare", "compute_share", "count_flops", "machine", "markdown", "matmul_peak_flops",
           "peak_rss_mb", "write_table"]


@dataclass
class Row:
    """One measured comparison. ``unit`` is the unit of the medians (``s`` per call, unless said otherwise)."""

    name: str
    description: str
    ratio: float
    goal: float
    bundle_median: float
    reference_median: float
    bundle_spread: list[float]
    reference_spread: list[float]
    repeats: int
    unit: str = "s"
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def met(self) -> bool:
        return self.ratio >= self.goal


@dataclass
class Contenders:
    """A bundle's way and the reference way of one unit of work, ready to call (inputs loaded, networks built)."""

    description: str
    bundle: Callable[[], Any]
    reference: Callable[[], Any]
    check: Callable[[Any, Any], dict] | None = None


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _reset_peak_rss() -> bool:
    """Resets the kernel's high-water mark of this process's resident memory (Linux); False where it cannot."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _status_mb(field_name: str) -> float | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field_name + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def peak_rss_mb(function: Callable[[], Any]) -> tuple[Any, float | None]:
    """Runs ``function`` once; returns its result and the peak resident memory it added, in MB (None where the
    platform cannot say). On CUDA it is the peak GPU memory allocated instead."""
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        result = function()
        _sync()
        return result, (torch.cuda.max_memory_allocated() - before) / 2**20
    if not _reset_peak_rss():
        return function(), None
    before = _status_mb("VmRSS")
    result = function()
    peak = _status_mb("VmHWM")
    return result, None if before is None or peak is None else max(peak - before, 0.0)


def _timed(function: Callable[[], Any]) -> tuple[float, Any]:
    _sync()
    start = time.perf_counter()
    result = function()
    _sync()
    return time.perf_counter() - start, result


def compare(name: str, description: str, bundle: Callable[[], Any], reference: Callable[[], Any], goal: float,
            repeats: int = 5, check: Callable[[Any, Any], dict] | None = None, unit: str = "s",
            memory: Callable[[str], float | None] | None = None) -> Row:
    """Times ``bundle`` and ``reference`` (each a call doing the whole unit of work), alternated, ``repeats`` times
    each after a warm-up. ``check(bundle_output, reference_output)`` returns figures that say the outputs agree
    (e.g. a maximum difference), stored with the row. ``memory(side)`` gives a side's peak memory in MB, measured
    where this process's allocator caches cannot hide it (see ``benchmarks.table``)."""
    extra: dict[str, Any] = {}
    if memory is not None:
        for side in ("bundle", "reference"):
            extra[f"{side}_peak_memory_added_mb"] = memory(side)
    bundle_out, reference_out = bundle(), reference()  # warm-up: caches, workers, first-call allocations
    extra.update(check(bundle_out, reference_out) if check else {})
    del bundle_out, reference_out
    times: dict[str, list[float]] = {"bundle": [], "reference": []}
    sides = {"bundle": bundle, "reference": reference}
    for repeat in range(repeats):
        order = ("bundle", "reference") if repeat % 2 == 0 else ("reference", "bundle")
        for side in order:
            seconds, _ = _timed(sides[side])
            times[side].append(seconds)
    b, r = statistics.median(times["bundle"]), statistics.median(times["reference"])
    return Row(name=name, description=description, ratio=r / b, goal=goal, bundle_median=b, reference_median=r,
               bundle_spread=[min(times["bundle"]), max(times["bundle"])],
               reference_spread=[min(times["reference"]), max(times["reference"])], repeats=repeats, unit=unit,
               extra=extra)


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"cpu": _cpu_model(), "cores": cores, "torch_threads": torch.get_num_threads(),
            "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
            "torch": torch.__version__, "python": platform.python_version(),
            "load_average": [round(v, 2) for v in os.getloadavg()] if hasattr(os, "getloadavg") else None}


def _number(value: float) -> str:
    return f"{value:.3g}" if abs(value) < 100 else f"{value:.0f}"


def markdown(bundle: str, rows: list[Row], machine_info: dict[str, Any], command: str) -> str:
    lines = [f"### `{bundle}`", "",
             f"`{command}` on {machine_info['cpu']} ({machine_info['cores']} cores, {machine_info['torch_threads']} "
             f"torch threads, device {machine_info['device']}, torch {machine_info['torch']}, load average "
             f"{machine_info['load_average']} at the end)", "",
             "| row | what is compared (bundle vs reference) | bundle median (min-max) | reference median (min-max) | "
             "ratio | goal | met | notes |",
             "|---|---|---|---|---|---|---|---|"]
    for row in rows:
        spread = [f"{_number(row.bundle_median)} ({_number(row.bundle_spread[0])}-{_number(row.bundle_spread[1])})",
                  f"{_number(row.reference_median)} ({_number(row.reference_spread[0])}-"
                  f"{_number(row.reference_spread[1])})"]
        notes = ", ".join(f"{k} {_number(v) if isinstance(v, float) else v}" for k, v in row.extra.items())
        lines.append(f"| `{row.name}` | {row.description} | {spread[0]} {row.unit} | {spread[1]} {row.unit} | "
                     f"{row.ratio:.2f} | >= {row.goal:g} | {'yes' if row.met else 'no'} | {notes} |")
    return "\n".join(lines) + "\n"


def write_table(results_dir: Path, bundle: str, rows: list[Row], machine_info: dict[str, Any], command: str,
                quick: bool) -> tuple[Path, Path]:
    """Writes ``<bundle>.md`` and ``<bundle>.json`` under ``results_dir``; returns both paths."""
    results_dir.mkdir(parents=True, exist_ok=True)
    md_path, json_path = results_dir / f"{bundle}.md", results_dir / f"{bundle}.json"
    md_path.write_text(markdown(bundle, rows, machine_info, command))
    document = {"bundle": bundle, "command": command, "quick": quick, "machine": machine_info,
                "rows": [{**asdict(row), "met": row.met} for row in rows]}
    json_path.write_text(json.dumps(document, indent=2))
    return md_path, json_path


def matmul_peak_flops(device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32, size: int = 4096,
                      repeats: int = 3) -> float:
    """The machine's practical compute limit: FLOP/s of the fastest of ``repeats`` ``size``x``size`` matrix products
    on ``device`` in ``dtype`` (after one warm-up), the ceiling that convolutions and products can approach."""
    device = torch.device(device)
    a, b = (torch.randn(size, size, device=device).to(dtype) for _ in range(2))
    torch.mm(a, b)
    best = float("inf")
    for _ in range(repeats):
        seconds, _ = _timed(lambda: torch.mm(a, b))
        best = min(best, seconds)
    return 2 * size**3 / best


def count_flops(function: Callable[[], Any]) -> int:
    """FLOPs of the matrix products, convolutions and attention in one call of ``function`` (PyTorch's
    ``FlopCounterMode``; element-wise work is not counted, work outside PyTorch, e.g. ONNX Runtime, is not seen)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        function()
    return counter.get_total_flops()


def compute_share(flops: float, seconds: float, peak: float) -> dict[str, float]:
    """The row's physical limit: FLOPs of the timed work, achieved FLOP/s, and that as a share of ``peak``."""
    achieved = flops / seconds
    return {"flops": float(flops), "achieved_flops_per_s": achieved, "compute_share": round(achieved / peak, 4)}
