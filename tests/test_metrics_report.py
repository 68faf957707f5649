"""The segmentation report micro-aggregates confusion matrices over cases."""

import csv
import json
from types import SimpleNamespace

import torch

from shared.metrics.segmentation_report import SegmentationReport


def _onehot(labels, n=4):
    return torch.nn.functional.one_hot(torch.tensor(labels), n).permute(1, 0).float()[..., None]  # (C, N, 1)


def test_micro_aggregated_table(tmp_path):
    report = SegmentationReport(str(tmp_path), ["A", "B", "C"], regions={"ABC": [1, 2, 3], "C": [3]}, name="m")
    case1 = {"pred": _onehot([0, 1, 1, 2, 3]), "label": _onehot([0, 1, 2, 2, 3])}
    case2 = {"pred": _onehot([1, 0, 0, 0, 0]), "label": _onehot([1, 1, 0, 0, 3])}
    report.update(SimpleNamespace(state=SimpleNamespace(output=[case1, case2])))
    table = report.write()
    # class 1 over both cases: tp=2 (case1 idx1, case2 idx0), fp=1 (case1 idx2), fn=1 (case2 idx1)
    a = table["classes"]["A"]
    assert abs(a["dice"] - 4 / 6) < 1e-6 and abs(a["iou"] - 2 / 4) < 1e-6
    assert abs(a["precision"] - 2 / 3) < 1e-6 and abs(a["recall"] - 2 / 3) < 1e-6
    assert abs(a["accuracy"] - 8 / 10) < 1e-6
    # class 3: tp=1, fn=1 (case2 idx4), fp=0
    assert abs(table["classes"]["C"]["dice"] - 2 / 3) < 1e-6
    # union region: case1 all 4 tumour voxels right; case2 predicts 1 of 3
    region = table["regions"]["ABC"]
    assert abs(region["dice"] - 2 * 5 / (5 + 7)) < 1e-6
    assert abs(region["dice_mean_over_cases"] - (1.0 + 2 * 1 / 4) / 2) < 1e-6
    assert table["num_cases"] == 2
    rows = list(csv.DictReader(open(tmp_path / "m.csv")))
    assert [r["name"] for r in rows] == ["A", "B", "C", "ABC", "C"]
    assert json.loads((tmp_path / "m.json").read_text()) == table
