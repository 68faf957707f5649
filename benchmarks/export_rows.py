"""The ``export`` rows: an inference network as TorchScript and under ONNX Runtime against eager PyTorch, on one
batch of the windows the bundle's inference feeds it, outputs compared."""

from __future__ import annotations

import logging

import torch

from benchmarks.harness import Row, compare, count_flops
from shared.inferers.onnx_runtime import OnnxRuntimeModule

__all__ = ["export_rows", "to_torchscript"]

logger = logging.getLogger(__name__)


def _tensors(output) -> list[torch.Tensor]:
    if isinstance(output, torch.Tensor):
        return [output]
    if isinstance(output, dict):
        return list(output.values())  # in the network's order, as the ONNX graph's outputs are
    return [t for t in output]


def to_torchscript(network: torch.nn.Module, example: torch.Tensor) -> tuple[torch.jit.ScriptModule, str]:
    """Scripted (else traced), frozen and optimised for inference, as a deployment would load it."""
    try:
        module, how = torch.jit.script(network), "scripted"
    except Exception:  # noqa: BLE001 - networks with Python-only constructs are traced, as shared.publish does
        module, how = torch.jit.trace(network, example, strict=False), "traced"
    return torch.jit.optimize_for_inference(torch.jit.freeze(module.eval())), how


def _agreement(ours, eager) -> dict[str, float]:
    a, b = _tensors(ours), _tensors(eager)
    return {"max_abs_diff": max(float((x.float() - y.float()).abs().max()) for x, y in zip(a, b))}


def export_rows(net_name: str, network: torch.nn.Module, example: torch.Tensor, repeats: int,
                onnx: bool = True) -> list[Row]:
    """``export_torchscript`` and ``export_onnxruntime`` rows for ``network`` on ``example`` (CPU)."""
    network = network.eval().cpu()
    example = example.cpu()

    def eager():
        with torch.inference_mode():
            return network(example)

    rows = []
    flops = count_flops(eager)  # the same work on every side: the row's physical limit (benchmarks.table)
    scripted, how = to_torchscript(network, example)

    def torchscript():
        with torch.inference_mode():
            return scripted(example)

    row = compare("export_torchscript", f"{net_name}: TorchScript ({how}, frozen, optimize_for_inference) vs "
                  f"eager, a batch of {tuple(example.shape)}", torchscript, eager, goal=1.5, repeats=repeats,
                  check=_agreement)
    row.extra["flops"] = flops
    rows.append(row)
    if onnx:
        try:
            session = OnnxRuntimeModule(network)
            session(example)  # the export, outside the timing
        except Exception as e:  # noqa: BLE001 - an exporter limit is a finding, reported in the row's place
            logger.warning("ONNX export of %s failed: %s", net_name, e)
            return rows
        rows.append(compare("export_onnxruntime", f"{net_name}: ONNX Runtime (CPU, all graph optimisations) vs "
                            f"eager, a batch of {tuple(example.shape)}", lambda: session(example), eager, goal=1.5,
                            repeats=repeats, check=_agreement))
        rows[-1].extra["flops"] = flops
    return rows
