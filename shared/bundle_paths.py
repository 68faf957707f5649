"""Locate the bundle a config belongs to, so configs run from any working directory."""

from __future__ import annotations

import ast
import inspect
import os
import sys
from pathlib import Path

__all__ = ["bundle_root"]


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
    for frame_info in inspect.stack(context=0):
        owner = frame_info.frame.f_locals.get("self")
        # ConfigWorkflow.__getattr__ raises KeyError for unknown names: read the instance dict instead.
        config_root = vars(owner).get("config_root_path") if hasattr(type(owner), "check_properties") else None
        if config_root is not None:
            return _root_of_config(Path(config_root) / "config.json")
    config_file = _config_file_from_argv(sys.argv)
    if config_file is not None:
        return _root_of_config(config_file)
    return os.getcwd()
