"""The model zoo's property check of bundle configs (``ConfigWorkflow.check_properties``), in a fresh process."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

# a command-line override's value as `monai.bundle run` reads it (Python literals, else the string)
CLI_VALUE = """
import ast

def value(text):
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text
"""

SCRIPT = CLI_VALUE + """
import sys
from monai.bundle import ConfigWorkflow

bundle, checks, meta = sys.argv[1], ast.literal_eval(sys.argv[2]), sys.argv[3] or None
sys.path.insert(0, bundle)  # what `run` does before running; programmatic use needs it too
for config, workflow_type, overrides in checks:
    overrides = {k: value(v) for k, v in overrides.items()}  # as the CLI parses them
    workflow = ConfigWorkflow(config_file=config, meta_file=meta, workflow_type=workflow_type, logging_file=False,
                              **overrides)
    workflow.initialize()
    print(config, "missing:", workflow.check_properties())
"""


def check_properties_of(bundle: Path, checks: Sequence[tuple[Path | Sequence[Path], str, dict]],
                        meta_file: Path | None = None) -> subprocess.CompletedProcess:
    """Check each ``(config or stack of configs, workflow_type, overrides)`` of one bundle in one process; its stdout
    holds a line ``<config> missing: [...]`` for each."""
    checks = [([str(c) for c in config] if isinstance(config, (list, tuple)) else str(config), workflow_type, overrides)
              for config, workflow_type, overrides in checks]
    return subprocess.run([sys.executable, "-c", SCRIPT, str(bundle), repr(checks), str(meta_file or "")],
                          capture_output=True, text=True, timeout=600)


def check_properties(bundle: Path, config: Path, workflow_type: str, overrides: dict,
                     meta_file: Path | None = None) -> subprocess.CompletedProcess:
    """Check one config; its stdout holds ``<config> missing: [...]``."""
    return check_properties_of(bundle, [(config, workflow_type, overrides)], meta_file)
