"""Running an inference network under ONNX Runtime instead of eager PyTorch, chosen in a config with ``backend``.

``BackendInferer`` wraps the config's own inferer (sliding windows, slices, ...): with ``backend="onnxruntime"`` the
network it is called with is exported to ONNX on first use, so after ``CheckpointLoader`` has loaded the weights,
once per input shape and dtype (the batch size stays dynamic), and every window then runs in an ONNX Runtime CPU
session. The outputs keep the network's structure (a tensor, a tuple or a dict of named branches)::

    "backend": "torch",
    "inferer": {
        "_target_": "shared.inferers.onnx_runtime.BackendInferer",
        "backend": "@backend",
        "inferer": {"_target_": "SlidingWindowInferer", "roi_size": [128, 128], "sw_batch_size": 64}
    }

and ``--backend onnxruntime`` on the command line. ``onnxruntime`` and ``onnx`` must be installed for that backend
only.

With ``backend="torch"``, ``channels_last=True`` runs the network in channels-last memory format instead
(:class:`ChannelsLastModule`), for networks whose convolutions measure faster that way.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from monai.inferers import Inferer
from monai.networks.utils import convert_to_onnx

__all__ = ["BACKENDS", "BackendInferer", "ChannelsLastModule", "OnnxRuntimeModule", "export_onnx", "onnx_session"]

logger = logging.getLogger(__name__)
BACKENDS = ("torch", "onnxruntime")


def _without_extra_state(network: torch.nn.Module) -> torch.nn.Module:
    """A copy of ``network`` whose modules keep no extra state (e.g. a recorded preset): the ONNX exporter takes
    every state-dict entry for a tensor, and such state is not part of the graph anyway."""
    network = copy.deepcopy(network)
    for module in network.modules():
        cls = type(module)
        if cls.get_extra_state is not torch.nn.Module.get_extra_state:
            module.__class__ = type(cls.__name__, (cls,), {"get_extra_state": torch.nn.Module.get_extra_state})
    return network


def _flatten(output: Any) -> tuple[list[torch.Tensor], Callable[[list[torch.Tensor]], Any]]:
    """The tensors of a network's output in the exporter's order, and how to rebuild the output from them."""
    if isinstance(output, torch.Tensor):
        return [output], lambda tensors: tensors[0]
    if isinstance(output, dict):
        keys = list(output)
        return list(output.values()), lambda tensors: dict(zip(keys, tensors))
    if isinstance(output, (tuple, list)):
        kind = type(output)
        return list(output), lambda tensors: kind(tensors)
    raise TypeError(f"cannot run a network returning {type(output).__name__} under ONNX Runtime")


def export_onnx(network: torch.nn.Module, example: torch.Tensor, destination: str | None = None, opset: int = 17,
                dynamic_spatial: bool = False) -> tuple[bytes, Callable[[list[torch.Tensor]], Any]]:
    """Export ``network`` (a copy, in eval mode, on CPU) traced at ``example`` with MONAI's ``convert_to_onnx``
    (saved to ``destination`` if given), with one input ``input`` and outputs ``output_<i>`` in the network's order;
    the batch axis is dynamic, and the spatial axes too with ``dynamic_spatial``. Returns the model's bytes and how
    to rebuild the network's output structure (tensor, tuple or dict) from a session's outputs.

    ``convert_to_onnx(verify=True)`` is not used: it compares nothing when the network returns a dict (HoVer-Net's
    branches; ``tests/test_onnx_runtime.py`` shows it) and only at the export size, so callers compare named outputs
    themselves, at several sizes (``shared.publish``)."""
    network = _without_extra_state(network).eval().cpu()
    example = example.detach().cpu()
    with torch.no_grad():
        outputs, rebuild = _flatten(network(example))
    output_names = [f"output_{i}" for i in range(len(outputs))]
    dynamic_axes = {"input": {0: "batch", **({d: f"input_{d}" for d in range(2, example.ndim)} if dynamic_spatial else {})}}
    for name, output in zip(output_names, outputs):
        spatial = {d: f"{name}_{d}" for d in range(2, output.ndim)} if dynamic_spatial else {}
        dynamic_axes[name] = {0: "batch", **spatial} if output.ndim else {}
    model = convert_to_onnx(network, [example], input_names=["input"], output_names=output_names,
                            opset_version=opset, dynamic_axes=dynamic_axes,
                            filename=None if destination is None else str(destination), dynamo=False)
    return model.SerializeToString(), rebuild


def onnx_session(model, threads: int | None = None):
    """An ONNX Runtime CPU session with every graph optimisation, of a model (a path or its bytes)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads or torch.get_num_threads()
    return ort.InferenceSession(model if isinstance(model, (bytes, str)) else str(model), options,
                                providers=["CPUExecutionProvider"])


class OnnxRuntimeModule(torch.nn.Module):
    """``network`` (in eval mode, weights as they are at the first call) run by ONNX Runtime on CPU.

    Args:
        network: the PyTorch network; it is exported once per input shape (batch excluded) and dtype.
        threads: ONNX Runtime's intra-op threads (default: torch's thread count).
        opset: the ONNX opset of the export.
    """

    def __init__(self, network: torch.nn.Module, threads: int | None = None, opset: int = 17) -> None:
        super().__init__()
        self.network, self.threads, self.opset = network, threads, opset
        self._sessions: dict[tuple, tuple[Any, Callable]] = {}

    def _session(self, x: torch.Tensor) -> tuple[Any, Callable]:
        key = (tuple(x.shape[1:]), x.dtype)
        if key not in self._sessions:
            model, rebuild = export_onnx(self.network, x[:1], opset=self.opset)
            session = onnx_session(model, self.threads)
            logger.info(f"{type(self.network).__name__} exported to ONNX for inputs of shape (N, "
                        f"{', '.join(map(str, key[0]))}); running under ONNX Runtime")
            self._sessions[key] = session, rebuild
        return self._sessions[key]

    def forward(self, x: torch.Tensor) -> Any:
        session, rebuild = self._session(x)
        outputs = session.run(None, {"input": x.detach().cpu().numpy()})
        return rebuild([torch.from_numpy(np.asarray(o)).to(x.device) for o in outputs])


class ChannelsLastModule(torch.nn.Module):
    """``network`` run in channels-last memory format: its weights converted on the first call (after the checkpoint
    is loaded), each 4D input converted before the call. oneDNN's channels-last convolutions are faster for some
    networks on CPU (HoVer-Net), slower for others (a CycleGAN generator): measure before choosing it."""

    def __init__(self, network: torch.nn.Module) -> None:
        super().__init__()
        self.network = network
        self._converted = False

    def forward(self, x: torch.Tensor) -> Any:
        if x.ndim != 4:
            return self.network(x)
        if not self._converted:
            self.network.to(memory_format=torch.channels_last)
            self._converted = True
        return self.network(x.contiguous(memory_format=torch.channels_last))


class BackendInferer(Inferer):
    """``inferer`` with the network run by ``backend``: ``"torch"`` (as it is, or with ``channels_last``:
    :class:`ChannelsLastModule`) or ``"onnxruntime"`` (:class:`OnnxRuntimeModule`, exported on the first call,
    reused while the same network is passed; ``channels_last`` does not apply)."""

    def __init__(self, inferer: Inferer, backend: str = "torch", threads: int | None = None,
                 channels_last: bool = False) -> None:
        super().__init__()
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        self.inferer, self.backend, self.threads, self.channels_last = inferer, backend, threads, channels_last
        self._wrapped: tuple[Callable, torch.nn.Module] | None = None

    def __getattr__(self, name: str) -> Any:  # the wrapped inferer's settings (roi_size, overlap, ...)
        if name == "inferer":
            raise AttributeError(name)
        return getattr(self.inferer, name)

    def _network(self, network: Callable) -> Callable:
        if self.backend == "torch" and not (self.channels_last and isinstance(network, torch.nn.Module)):
            return network
        if self._wrapped is None or self._wrapped[0] is not network:
            wrapped = OnnxRuntimeModule(network, self.threads) if self.backend == "onnxruntime" else \
                ChannelsLastModule(network)
            self._wrapped = network, wrapped
        return self._wrapped[1]

    def __call__(self, inputs: torch.Tensor, network: Callable, *args: Any, **kwargs: Any) -> Any:
        return self.inferer(inputs, self._network(network), *args, **kwargs)
