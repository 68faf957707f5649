"""A train config's trainer, as its JSON builds it, repeating its own iteration on one fixed batch: the losses it
reports should fall. Runs in a fresh process (one a bundle: the configs share its imports)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from helpers.properties import CLI_VALUE

SCRIPT = CLI_VALUE + """
import json, sys
import torch
from monai.bundle import ConfigParser

bundle, runs = sys.argv[1], ast.literal_eval(sys.argv[2])
sys.path.insert(0, bundle)  # what `run` does before running
results = []
for configs, overrides, loss_key, iterations in runs:
    parser = ConfigParser()
    parser.read_config(configs)
    parser.update({k: value(v) for k, v in overrides.items()})
    if "initialize" in parser.config:
        parser.get_parsed_content("initialize")
    trainer = parser.get_parsed_content("train#trainer")
    batch = next(iter(trainer.data_loader))
    losses = []
    for _ in range(iterations):
        output = trainer._iteration(trainer, batch)
        output = output[0] if isinstance(output, list) else output  # decollated: every item holds the batch's loss
        losses.append(float(output[loss_key]))
    results.append({"configs": [c.rsplit("/", 1)[-1] for c in configs], "losses": losses})
print("LEARNING " + json.dumps(results))
"""


def losses_on_one_batch(bundle: Path, runs: Sequence[tuple[Sequence[Path], dict, str, int]]) -> list[dict]:
    """For each ``(config stack, overrides, loss key of the trainer's output, iterations)`` of ``bundle``: the loss
    of each iteration of its trainer on the first batch of its training loader, repeated."""
    runs = [([str(c) for c in configs], overrides, key, n) for configs, overrides, key, n in runs]
    result = subprocess.run([sys.executable, "-c", SCRIPT, str(bundle), repr(runs)], capture_output=True, text=True,
                            timeout=900)
    line = next((x for x in result.stdout.splitlines() if x.startswith("LEARNING ")), None)
    assert result.returncode == 0 and line, result.stdout[-3000:] + result.stderr[-5000:]
    return json.loads(line[len("LEARNING "):])
