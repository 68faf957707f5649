"""The running bundle workflow: where its bundle is, and which configs it was stacked from."""

from __future__ import annotations

import ast
import inspect
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

__all__ = ["bundle_root", "pick", "require_stacked_on"]


def _running_workflow():
    """The ``monai.bundle.ConfigWorkflow`` (or other ``BundleWorkflow``) on the call stack, if any."""
    for frame_info in inspect.stack(context=0):
        owner = frame_info.frame.f_locals.get("self")
        # ConfigWorkflow.__getattr__ raises KeyError for unknown names: read the instance dict instead.
        if hasattr(type(owner), "check_properties") and "config_root_path" in getattr(owner, "__dict__", {}):
            return owner
    return None


def _root_of_config(config_file: str | Path) -> str:
    configs = Path(config_file).resolve().parent
    return str(configs.parent if configs.name == "configs" else configs)


def _config_file_from_argv(argv: list[str]) -> str | None:
    """The first file of ``--config_file X`` / ``--config_file=X`` (X may be a Python/JSON list of files)."""
    for i, arg in enumerate(argv):
        if arg == "--config_file" and i + 1 < len(argv):
            value = argv[i + 1]
        elif arg.startswith("--config_file="):
            value = arg.split("=", 1)[1]
        else:
            continue
        if value.strip().startswith("["):
            value = ast.literal_eval(value)[0]
        return value.split(",")[0] if not os.path.isfile(value) else value
    return None


def bundle_root() -> str:
    """The root folder of the bundle whose config is being parsed.

    Looks for the running ``monai.bundle.ConfigWorkflow`` (it knows its ``config_root_path``), then for
    ``--config_file`` on the command line (``ckpt_export``, ``verify_net_in_out``), and falls back to the working
    directory, as MONAI's own default ``bundle_root: "."`` does. ``--bundle_root`` still overrides all of this.
    """
    workflow = _running_workflow()
    if workflow is not None:
        return _root_of_config(Path(vars(workflow)["config_root_path"]) / "config.json")
    config_file = _config_file_from_argv(sys.argv)
    if config_file is not None:
        return _root_of_config(config_file)
    return os.getcwd()


def require_stacked_on(base: str | Sequence[str], config: str, ids: Sequence[str]) -> None:
    """Stop with a message that says how to run ``config`` when the running workflow lacks the ``ids`` that
    ``base`` (one config, or a stack of them) defines, i.e. when the stacked config ``config`` is run on its own.
    Silent outside a workflow."""
    workflow = _running_workflow()
    if workflow is None:
        return
    missing = [i for i in ids if i not in workflow.parser]
    if missing:
        bases = [base] if isinstance(base, str) else list(base)
        root = _root_of_config(Path(vars(workflow)["config_root_path"]) / "config.json")
        configs = os.path.join(root, "configs")
        stack = ",".join(f"'{os.path.join(configs, c)}'" for c in [*bases, config])
        raise ValueError(
            f"{config} is stacked on {' + '.join(bases)} (it uses {missing} from it): run them together, e.g. "
            f"--config_file \"[{stack}]\""
        )


def pick(options: Mapping | Sequence, key: object) -> object:
    """``options[key]`` as a component (``{"_target_": "shared.engines.workflow.pick", "options": "@presets", "key":
    "@preset"}``), with an error that lists the options where ``key`` is not one of them."""
    names = list(options) if isinstance(options, Mapping) else list(range(len(options)))
    if key not in names:
        raise KeyError(f"{key!r} is not one of {names}")
    return options[key]
