"""One step of ``python -m benchmarks.gpu_check``, in a process of its own (or each process of ``torchrun``): a
bundle config stack run as ``monai.bundle run`` runs it, instrumented, or a network exported and run.

    python -m benchmarks.gpu_step '<json spec>'

The spec is ``{"bundle", "kind", "configs", "run_id", "overrides", "count_flops", "quick"}`` (``kind``: ``train``,
``resume``, ``run`` or ``export``: the inference config's ``export_networks`` with the weights of ``ckpt_dir``). The step prints
its figures as one line ``GPU_STEP_RESULT {json}`` at the end; an exception fails the step (exit 1) after that line
has named it.
"""

from __future__ import annotations

import ast
import json
import os
import statistics
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import torch
from ignite.engine import Events

RESULT = "GPU_STEP_RESULT"
REPO = Path(__file__).resolve().parents[1]


def _reset_peak() -> None:
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()


def peak_memory_mb() -> dict[str, Any]:
    """The peak memory of this process: GPU memory allocated on CUDA, else the resident set's high-water mark."""
    if torch.cuda.is_available():
        return {"peak_memory_mb": round(torch.cuda.max_memory_allocated() / 2**20, 1), "memory": "GPU allocated"}
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return {"peak_memory_mb": round(int(line.split()[1]) / 1024, 1), "memory": "CPU resident (peak)"}
    return {"peak_memory_mb": None, "memory": "unknown"}


class IterationClock:
    """Times a trainer's iterations and counts its validations: ``iterations_per_s`` from the median interval
    between consecutive iterations of an epoch (data loading included, the first iteration's warm-up and the
    validation gaps excluded)."""

    def __init__(self) -> None:
        self.stamps: list[tuple[int, float]] = []
        self.started_at_iteration: int | None = None
        self.validations = 0

    def attach(self, trainer, validator=None) -> None:
        trainer.add_event_handler(Events.STARTED, lambda e: setattr(self, "started_at_iteration", e.state.iteration))
        trainer.add_event_handler(Events.ITERATION_COMPLETED,
                                  lambda e: self.stamps.append((e.state.epoch, time.perf_counter())))
        if validator is not None:
            validator.add_event_handler(Events.COMPLETED, lambda e: setattr(self, "validations", self.validations + 1))

    def figures(self) -> dict[str, Any]:
        gaps = [b[1] - a[1] for a, b in zip(self.stamps, self.stamps[1:]) if a[0] == b[0]]
        return {"iterations_run": len(self.stamps), "resumed_at_iteration": self.started_at_iteration,
                "validations": self.validations,
                "iterations_per_s": round(1 / statistics.median(gaps), 3) if gaps else None}


def _value(text: Any) -> Any:
    if not isinstance(text, str):
        return text
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def _report_cases(output_dir: Path, since: float) -> int | None:
    """Cases in the evaluation / inference report written by this step, if it wrote one."""
    reports = [p for p in output_dir.glob("*report.json") if p.stat().st_mtime >= since]
    for report in sorted(reports, key=lambda p: p.stat().st_mtime, reverse=True):
        content = json.loads(report.read_text())
        if isinstance(content, dict) and "succeeded" in content:
            return len(content["succeeded"]) + len(content.get("failed", []))
    return None


def run_workflow(spec: dict) -> dict[str, Any]:
    """The config stack run as ``monai.bundle run`` does (``create_workflow``, ``run``, ``finalize``), timed."""
    from monai.bundle import create_workflow
    from torch.utils.flop_counter import FlopCounterMode

    bundle = REPO / "bundles" / spec["bundle"]
    if str(bundle) not in sys.path:  # `run` does this before running; the trainer is built here before that
        sys.path.insert(1, str(bundle))
    configs = [str(c if Path(c).is_absolute() else bundle / "configs" / c) for c in spec["configs"]]
    overrides = {k: _value(v) for k, v in spec.get("overrides", {}).items()}
    workflow = create_workflow(config_file=configs, run_id=spec.get("run_id", "run"), **overrides)
    parser = workflow.parser
    figures: dict[str, Any] = {}
    clock = None
    if spec["kind"] in ("train", "resume"):
        clock = IterationClock()
        validator = parser.get_parsed_content("validate#evaluator") if "validate#evaluator" in parser else None
        clock.attach(parser.get_parsed_content("train#trainer"), validator)
    _reset_peak()
    start_wall = time.time()
    start = time.perf_counter()
    workflow.run()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    figures["seconds"] = round(time.perf_counter() - start, 3)
    figures.update(peak_memory_mb())
    if clock is not None:
        figures.update(clock.figures())
        trainer = parser.get_parsed_content("train#trainer")
        figures["final_iteration"] = trainer.state.iteration
        state_dir = Path(parser.get_parsed_content("training_state#dir"))
        figures["states_saved"] = len(list(state_dir.glob("state_iteration=*.pt")))
    if "output_dir" in parser:
        cases = _report_cases(Path(parser.get_parsed_content("output_dir")), start_wall)
        if cases:
            figures.update(cases=cases, seconds_per_case=round(figures["seconds"] / cases, 3))
    if spec.get("count_flops"):
        with FlopCounterMode(display=False) as counter:  # a second, untimed pass: the counter slows every op
            workflow.run()
        figures["flops"] = counter.get_total_flops()
    workflow.finalize()
    return figures


def _load_network(parser, net_id: str, weights: Path, device: torch.device) -> torch.nn.Module:
    network = parser.get_parsed_content(net_id)
    network.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    return network.eval().to(device)


def _tensors(output: Any) -> list[torch.Tensor]:
    if isinstance(output, torch.Tensor):
        return [output]
    return list(output.values()) if isinstance(output, dict) else list(output)


def _max_difference(a: Any, b: Any) -> float:
    return max(float((x.float().cpu() - y.float().cpu()).abs().max()) for x, y in zip(_tensors(a), _tensors(b)))


def _median_seconds(function, repeats: int = 5) -> float:
    times = []
    for _ in range(repeats):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        start = time.perf_counter()
        function()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _example_shape(data_format: dict, quick: bool) -> tuple[list[int], torch.dtype]:
    """One input of the metadata's format: the smallest size but one when ``quick``, else the largest whose sides
    stay within 256 pixels (2D) or 96 voxels (3D), about what the bundle's inference feeds the network."""
    image = next(iter(data_format["inputs"].values()))
    dtype = getattr(torch, image.get("dtype", "float32"))
    sizes = [[int(eval(str(s), {"n": n})) for s in image["spatial_shape"]] for n in range(1, 65)]
    limit = 256 if len(sizes[0]) == 2 else 96
    fitting = [size for size in sizes if max(size) <= limit] or sizes[:1]
    return [1, image["num_channels"], *(sizes[1] if quick else fitting[-1])], dtype


def run_export(spec: dict) -> dict[str, Any]:
    """Each network the inference config exports, with its weights from ``ckpt_dir``, as frozen TorchScript on this
    device and under ONNX Runtime (its CPU provider), each against eager PyTorch on one input of the metadata's
    format."""
    from torch.utils.flop_counter import FlopCounterMode

    from benchmarks.bundle_config import parse
    from benchmarks.export_rows import to_torchscript
    from shared.inferers.onnx_runtime import OnnxRuntimeModule
    from shared.publish import _data_format

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    meta = json.loads((REPO / "bundles" / spec["bundle"] / "configs" / "metadata.json").read_text())
    parser = parse(spec["bundle"], spec["configs"], {k: _value(v) for k, v in spec.get("overrides", {}).items()})
    weights_dir = Path(parser.get_parsed_content("ckpt_dir"))
    # the networks a published bundle ships (its models/ files are the run's checkpoints here)
    exported = {net_id: weights_dir / Path(file).name
                for net_id, file in parser.get_parsed_content("export_networks").items()}
    networks = {}
    for net_id, weights in exported.items():
        shape, dtype = _example_shape(_data_format(meta, net_id), quick=spec.get("quick", False))
        network = _load_network(parser, net_id, Path(weights), device)
        example = torch.rand(shape, dtype=dtype, device=device)
        with torch.inference_mode():
            eager = network(example)
            with FlopCounterMode(display=False) as counter:
                network(example)
            eager_s = _median_seconds(lambda: network(example))
        row: dict[str, Any] = {"input": list(example.shape), "flops": counter.get_total_flops(),
                               "eager_s": round(eager_s, 5)}
        scripted, how = to_torchscript(network, example)
        with torch.inference_mode():
            row.update(torchscript=how, torchscript_s=round(_median_seconds(lambda: scripted(example)), 5),
                       torchscript_max_abs_diff=_max_difference(scripted(example), eager))
        try:
            onnx = OnnxRuntimeModule(network.cpu())
            cpu_example = example.cpu()
            with torch.inference_mode():
                row.update(onnxruntime_max_abs_diff=_max_difference(onnx(cpu_example), network(cpu_example)),
                           onnxruntime_s=round(_median_seconds(lambda: onnx(cpu_example)), 5),
                           onnxruntime_device="cpu")
        except Exception as e:  # noqa: BLE001 - an exporter limit is reported beside the TorchScript figures
            row["onnxruntime_error"] = f"{type(e).__name__}: {e}"[:300]
        networks[net_id] = row
    return {"networks": networks, **peak_memory_mb()}


def main(argv: list[str] | None = None) -> int:
    spec = json.loads((argv or sys.argv[1:])[0])
    result: dict[str, Any] = {"ok": True, "rank": int(os.environ.get("RANK", 0))}
    try:
        result.update(run_export(spec) if spec["kind"] == "export" else run_workflow(spec))
    except BaseException as e:  # noqa: BLE001 - every failure becomes the step's error line in the table
        traceback.print_exc()
        result.update(ok=False, error=f"{type(e).__name__}: {e}".strip()[:2000])
    print(f"{RESULT} {json.dumps(result)}", flush=True)
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
