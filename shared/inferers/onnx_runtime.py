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
(:class:`ChannelsLastModule`), for networks whose convolutions measure faster that way, and ``autocast_dtype``
(``"bfloat16"``, ``"float16"``) runs it under ``torch.autocast`` on the input's device, its outputs returned in
float32: about twice as fast on a CPU with bf16 instructions, with results that differ slightly (measure them).
``fold_batch_norm=True`` runs a copy of the network whose batch normalisations that directly follow a convolution
are folded into it (:func:`fold_batch_norm`): the same function in eval mode, in fewer passes over memory.
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

__all__ = ["BACKENDS", "AutocastModule", "BackendInferer", "ChannelsLastModule", "FoldedBatchNormModule",
           "fold_batch_norm", "OnnxRuntimeModule", "export_onnx", "onnx_session"]

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


def fold_batch_norm(network: torch.nn.Module) -> torch.nn.Module:
    """A copy of ``network`` in eval mode in which each ``BatchNorm2d`` that directly follows a ``Conv2d`` in the same
    container (``nn.Sequential`` order) is folded into that convolution (PyTorch's ``fuse_conv_bn_eval``) and
    replaced by ``nn.Identity``: the same eval-mode outputs up to float rounding."""
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    folded = copy.deepcopy(network).eval()
    for module in folded.modules():
        names = list(module._modules)
        for first, second in zip(names, names[1:]):
            conv, norm = module._modules[first], module._modules[second]
            if isinstance(conv, torch.nn.Conv2d) and isinstance(norm, torch.nn.BatchNorm2d) \
                    and norm.track_running_stats and norm.running_mean is not None:
                module._modules[first] = fuse_conv_bn_eval(conv, norm)
                module._modules[second] = torch.nn.Identity()
    return folded


class FoldedBatchNormModule(torch.nn.Module):
    """``network`` run as :func:`fold_batch_norm`'s copy, made on the first call (after the checkpoint is loaded)."""

    def __init__(self, network: torch.nn.Module) -> None:
        super().__init__()
        self.network = network
        self._folded: torch.nn.Module | None = None

    def forward(self, x: torch.Tensor) -> Any:
        if self._folded is None:
            self._folded = fold_batch_norm(self.network)
        return self._folded(x)


class AutocastModule(torch.nn.Module):
    """``network`` run under ``torch.autocast`` with ``dtype`` on its input's device; floating outputs (a tensor, or
    those of a dict, tuple or list) returned in float32."""

    def __init__(self, network: Callable, dtype: torch.dtype) -> None:
        super().__init__()
        self.network, self.dtype = network, dtype

    def forward(self, x: torch.Tensor) -> Any:
        with torch.autocast(device_type=x.device.type, dtype=self.dtype):
            output = self.network(x)
        if isinstance(output, dict):
            return {key: _as_float32(value) for key, value in output.items()}
        if isinstance(output, (tuple, list)):
            return type(output)(_as_float32(value) for value in output)
        return _as_float32(output)


def _as_float32(value: Any) -> Any:
    return value.float() if isinstance(value, torch.Tensor) and value.is_floating_point() else value


class BackendInferer(Inferer):
    """``inferer`` with the network run by ``backend``: ``"torch"`` (as it is, with ``fold_batch_norm``
    (:class:`FoldedBatchNormModule`), ``channels_last`` (:class:`ChannelsLastModule`) and / or ``autocast_dtype``
    (:class:`AutocastModule`)) or ``"onnxruntime"`` (:class:`OnnxRuntimeModule`, exported on the first call, reused
    while the same network is passed; the three options do not apply: ONNX Runtime folds batch norms itself)."""

    def __init__(self, inferer: Inferer, backend: str = "torch", threads: int | None = None,
                 channels_last: bool = False, autocast_dtype: str | torch.dtype | None = None,
                 fold_batch_norm: bool = False) -> None:
        super().__init__()
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        if isinstance(autocast_dtype, str):
            dtype = getattr(torch, autocast_dtype, None)
            if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
                raise ValueError(f"autocast_dtype must name a torch floating dtype (bfloat16, float16); "
                                 f"got {autocast_dtype!r}")
            autocast_dtype = dtype
        self.inferer, self.backend, self.threads, self.channels_last = inferer, backend, threads, channels_last
        self.autocast_dtype, self.fold_batch_norm = autocast_dtype, fold_batch_norm
        self._wrapped: tuple[Callable, torch.nn.Module] | None = None

    def __getattr__(self, name: str) -> Any:  # the wrapped inferer's settings (roi_size, overlap, ...)
        if name == "inferer":
            raise AttributeError(name)
        return getattr(self.inferer, name)

    def _network(self, network: Callable) -> Callable:
        module = isinstance(network, torch.nn.Module)
        channels_last, fold = self.channels_last and module, self.fold_batch_norm and module
        if self.backend == "torch" and not channels_last and not fold and self.autocast_dtype is None:
            return network
        if self._wrapped is None or self._wrapped[0] is not network:
            if self.backend == "onnxruntime":
                wrapped = OnnxRuntimeModule(network, self.threads)
            else:
                wrapped = FoldedBatchNormModule(network) if fold else network
                wrapped = ChannelsLastModule(wrapped) if channels_last else wrapped
                if self.autocast_dtype is not None:
                    wrapped = AutocastModule(wrapped, self.autocast_dtype)
            self._wrapped = network, wrapped
        return self._wrapped[1]

    def __call__(self, inputs: torch.Tensor, network: Callable, *args: Any, **kwargs: Any) -> Any:
        return self.inferer(inputs, self._network(network), *args, **kwargs)
