"""Import a bundle's ``scripts`` package in the test process, under a name private to the bundle."""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path
from types import ModuleType


def bundle_module(bundle: Path, module: str) -> ModuleType:
    """``scripts.<module>`` of ``bundle``, imported as ``<bundle name>_scripts.<module>`` (the name publishing gives
    it), so that several bundles' scripts load side by side in one process."""
    package = f"{bundle.name}_scripts"
    if package not in sys.modules:
        init = bundle / "scripts" / "__init__.py"
        spec = importlib.util.spec_from_file_location(package, init, submodule_search_locations=[str(init.parent)])
        sys.modules[package] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(sys.modules[package])
    return importlib.import_module(f"{package}.{module}")
