"""Stack, don't copy: no config block is written twice within the configs that run together.

A stack is the list of configs one documented command runs (``--config_file "['train.json','evaluate.json']"``).
Within a stack, and between configs stacked on the same base (which could share the base instead), no JSON block
(an object or list of at least ``MIN_BLOCK_CHARS`` characters) appears twice. Configs that run alone (``train*.json``,
``inference.json``, ``synthesize.json``, ...) carry their own definitions: the model zoo's tools load a train or
inference config by itself, so a block shared by two of them is the one repetition allowed.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
MIN_BLOCK_CHARS = 60

# every documented stack of each bundle (the commands in the README and the model cards); a config alone is a stack
STACKS = {
    "babyai_infant_brain_t2w_sr": [
        ["train.json", "evaluate.json"],
        ["inference.json"],
        ["synthesize.json"],
    ],
    "brats_mri_slice_segmentation": [
        ["train.json", "evaluate.json"],
        ["inference.json"],
    ],
    "hipmri_pelvis_vqvae": [
        ["train.json", "evaluate.json"],
        ["train.json", "train_prior.json", "generate.json", "evaluate_generation.json"],
        ["train.json", "fit_prior.json", "generate.json", "evaluate_generation.json"],
        ["train.json", "fit_deformation_prior.json", "generate.json", "evaluate_generation.json"],
        ["inference.json"],
    ],
    "ispy2_breast_mri_vae_augmentation": [
        ["train.json", "evaluate.json"],
        ["train.json", "study_unet.json"],
        ["train.json", "train_vae.json", "generate.json"],
        ["compare.json"],
        ["crossval.json"],
        ["inference.json"],
    ],
    "pathology_ihc_to_he_hovernet": [
        ["train_cyclegan.json", "evaluate_cyclegan.json"],
        ["train_cyclegan.json", "multi_gpu_train_cyclegan.json"],
        ["train_cyclegan.json", "brief.json"],
        ["train_hovernet.json", "evaluate_hovernet.json"],
        ["train_hovernet.json", "brief.json"],
        ["inference.json", "brief.json", "count_nuclei.json"],
    ],
}


def blocks(node, path: str = "") -> Iterator[tuple[str, str]]:
    """Every object or list of ``node`` (with its id) whose canonical JSON has at least ``MIN_BLOCK_CHARS`` characters."""
    if isinstance(node, (dict, list)):
        text = json.dumps(node, sort_keys=True)
        if len(text) >= MIN_BLOCK_CHARS:
            yield path, text
        items = node.items() if isinstance(node, dict) else enumerate(node)
        for key, value in items:
            yield from blocks(value, f"{path}#{key}" if path else str(key))


def related_pairs(stacks: list[list[str]]) -> set[tuple[str, str]]:
    """Configs that run together, and configs stacked on the same base."""
    pairs = set()
    for stack in stacks:
        pairs.update(itertools.combinations(sorted(set(stack)), 2))
    for a, b in itertools.combinations(stacks, 2):
        if len(a) > 1 and len(b) > 1 and a[0] == b[0]:
            pairs.update((x, y) if x < y else (y, x) for x in a[1:] for y in b[1:] if x != y)
    return pairs


def repeated_blocks(configs: dict[str, dict], pairs: set[tuple[str, str]]) -> list[str]:
    """``file#id ~ file#id`` for each block written in both configs of a pair (the largest such block only)."""
    found = []
    for first, second in sorted(pairs):
        second_blocks: dict[str, str] = {}
        for path, text in blocks(configs[second]):
            second_blocks.setdefault(text, path)
        reported: list[str] = []
        for path, text in sorted(blocks(configs[first]), key=lambda item: -len(item[1])):
            if text in second_blocks and not any(text in larger for larger in reported):
                reported.append(text)
                found.append(f"{first}:{path or '<whole>'} ~ {second}:{second_blocks[text]}")
    return found


def test_related_pairs_cover_stacks_and_siblings():
    pairs = related_pairs([["t.json", "a.json", "b.json"], ["t.json", "c.json"], ["i.json"], ["u.json", "a.json"]])
    assert pairs == {("a.json", "b.json"), ("a.json", "t.json"), ("b.json", "t.json"), ("c.json", "t.json"),
                     ("a.json", "c.json"), ("b.json", "c.json"), ("a.json", "u.json")}


def test_repeated_blocks_reports_the_largest_shared_block():
    handler = {"_target_": "StatsHandler", "iteration_log": False, "_disabled_": "@is_not_rank0"}
    configs = {
        "a.json": {"validate": {"handlers": [handler, {"_target_": "x"}]}, "n": 1},
        "b.json": {"validate#handlers": [handler], "m": {"k": "a short block"}},
        "c.json": {"m": {"k": "a short block"}},
    }
    assert repeated_blocks(configs, {("a.json", "b.json")}) == ["a.json:validate#handlers#0 ~ b.json:validate#handlers#0"]
    assert repeated_blocks(configs, {("b.json", "c.json")}) == []  # under MIN_BLOCK_CHARS


@pytest.mark.parametrize("bundle", sorted(STACKS))
def test_no_block_is_repeated_within_a_stack(bundle):
    config_dir = REPO / "bundles" / bundle / "configs"
    configs = {p.name: json.loads(p.read_text()) for p in config_dir.glob("*.json") if p.name != "metadata.json"}
    stacked = {name for stack in STACKS[bundle] for name in stack}
    assert stacked == set(configs), "every config belongs to a documented stack (add new ones to STACKS)"
    assert repeated_blocks(configs, related_pairs(STACKS[bundle])) == []


def repeated_within(config: dict) -> list[str]:
    """``id ~ id`` for each block written twice in one config (neither inside the other; the largest only)."""
    where: dict[str, list[str]] = {}
    for path, text in blocks(config):
        where.setdefault(text, []).append(path)
    found, reported = [], []
    for text, paths in sorted(where.items(), key=lambda item: -len(item[0])):
        if len(paths) > 1 and not any(text in larger for larger in reported):
            reported.append(text)
            found.append(" ~ ".join(paths))
    return found


def test_repeated_within_reports_blocks_written_twice_in_one_config():
    block = {"_target_": "PostProcessing", "keys": ["pred", "label"], "argmax": True}
    assert repeated_within({"a": {"post": block}, "b": [block], "c": {"post": {**block, "argmax": False}}}) == [
        "a#post ~ b#0"]
    assert repeated_within({"a": {"post": block}}) == []


@pytest.mark.parametrize("config", sorted((REPO / "bundles").glob("*/configs/*.json")),
                         ids=lambda p: f"{p.parent.parent.name}/{p.name}")
def test_no_block_is_repeated_within_a_config(config):
    assert repeated_within(json.loads(config.read_text())) == []
