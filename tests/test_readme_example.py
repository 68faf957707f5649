"""The README's "How to add a bundle" shows the BraTS bundle's actual configs: each JSON excerpt there must be what the
file holds (a part of train.json; the whole of evaluate.json)."""

from __future__ import annotations

import json
import re

from conftest import BRATS, REPO


def _excerpts() -> list[dict]:
    readme = (REPO / "README.md").read_text()
    section = readme[readme.index("## How to add a bundle"):]
    return [json.loads(block) for block in re.findall(r"```json\n(.*?)```", section, flags=re.S)]


def _is_part_of(part, whole) -> bool:
    """``part`` is ``whole`` with some dictionary entries left out (lists and values are whole)."""
    if isinstance(part, dict):
        return isinstance(whole, dict) and all(k in whole and _is_part_of(v, whole[k]) for k, v in part.items())
    return part == whole


def test_the_how_to_excerpts_are_the_brats_configs_as_they_are():
    *train_parts, evaluate = _excerpts()
    train = json.loads((BRATS / "configs" / "train.json").read_text())
    assert len(train_parts) == 4
    for part in train_parts:
        assert _is_part_of(part, train), json.dumps(part)[:200]
    assert evaluate == json.loads((BRATS / "configs" / "evaluate.json").read_text())


def test_a_changed_value_is_not_part_of_the_config():
    train = json.loads((BRATS / "configs" / "train.json").read_text())
    assert _is_part_of({"train": {"preprocessing": train["train"]["preprocessing"]}}, train)
    assert not _is_part_of({"seed": train["seed"] + 1}, train)
    assert not _is_part_of({"validate": {"missing": 1}}, train)
