"""The model zoo's property check of a bundle config (``ConfigWorkflow.check_properties``), in a fresh process."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCRIPT = """
import ast, sys
from monai.bundle import ConfigWorkflow

def value(text):
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text

bundle, config, workflow_type, meta = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[5] or None
overrides = {k: value(v) for k, v in ast.literal_eval(sys.argv[4]).items()}  # as the CLI parses them
sys.path.insert(0, bundle)  # what `run` does before running; programmatic use needs it too
workflow = ConfigWorkflow(config_file=config, meta_file=meta, workflow_type=workflow_type, logging_file=False,
                          **overrides)
workflow.initialize()
print("missing:", workflow.check_properties())
"""


def check_properties(bundle: Path, config: Path, workflow_type: str, overrides: dict,
                     meta_file: Path | None = None) -> subprocess.CompletedProcess:
    """Run the check; its stdout holds ``missing: [...]``."""
    return subprocess.run([sys.executable, "-c", SCRIPT, str(bundle), str(config), workflow_type, repr(overrides),
                           str(meta_file or "")], capture_output=True, text=True, timeout=600)
