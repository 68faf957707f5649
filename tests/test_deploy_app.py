"""The MONAI Deploy application of the BraTS bundle, run as its README says, where the SDK imports."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest

from conftest import BRATS, ORACLE_ENV, REPO, overrides, run_bundle
from test_dicom import _seg_on_grid
from test_dicom_bundles import DESCRIPTIONS, _write_study

pytestmark = pytest.mark.slow
try:
    import holoscan  # noqa: F401
    import monai.deploy  # noqa: F401

    SDK_PROBLEM = None
except Exception as e:  # ImportError, or a Holoscan runtime that cannot load its libraries
    SDK_PROBLEM = f"{type(e).__name__}: {e}"


@pytest.mark.skipif(SDK_PROBLEM is not None, reason=f"the MONAI Deploy App SDK does not import here ({SDK_PROBLEM}); "
                    "pip install -r deploy/brats_seg_app/requirements.txt (it pulls Holoscan, built for CUDA)")
def test_the_deploy_app_writes_the_bundles_labels_as_a_seg(brats_demo_dir, tmp_path):
    case = "BraTS20_Training_002"
    images = {m: nib.load(brats_demo_dir / case / f"{case}_{m}.nii.gz") for m in DESCRIPTIONS}
    affine = images["flair"].affine
    written = _write_study(tmp_path / "dicom", "study", {m: np.asarray(i.dataobj) for m, i in images.items()}, affine,
                           slice_axis=0)
    oracle = {"network_def": "{'_target_': 'oracle.FlairThreshold'}", "handlers": "[]", "checkpoint": "None",
              "dataloader#num_workers": "0", "pixdim": "[3.0, 3.0, 3.0]"}
    run_bundle(["run", "--config_file", str(BRATS / "configs" / "inference.json"),
                *overrides({**oracle, "dataset_dir": str(brats_demo_dir / case), "output_dir": str(tmp_path / "nifti")})],
               cwd=tmp_path, env=ORACLE_ENV)
    expected = nib.load(tmp_path / "nifti" / f"{case}_pred.nii.gz")

    app_overrides = {"network_def": {"_target_": "oracle.FlairThreshold"}, "handlers": [], "checkpoint": None,
                     "dataloader#num_workers": 0, "pixdim": [3.0, 3.0, 3.0]}
    env = {**os.environ, **ORACLE_ENV, "BRATS_APP_OVERRIDES": json.dumps(app_overrides),
           "PYTHONPATH": os.pathsep.join([str(REPO), ORACLE_ENV["PYTHONPATH"]])}
    result = subprocess.run([sys.executable, "-m", "deploy.brats_seg_app", "-i", str(tmp_path / "dicom" / "study"),
                             "-o", str(tmp_path / "out")], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-4000:]
    (seg_path,) = (tmp_path / "out").glob("*.dcm")
    labels = np.asarray(expected.dataobj)
    assert (labels == 2).sum() > 100
    assert np.array_equal(_seg_on_grid(seg_path, affine, labels.shape, {1: 1, 2: 2, 3: 4}), labels)
    seg = pydicom.dcmread(seg_path)
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == pydicom.dcmread(written["flair"][0]).SeriesInstanceUID
    metadata = json.loads((BRATS / "configs" / "metadata.json").read_text())
    algorithm = seg.SegmentSequence[0].SegmentationAlgorithmIdentificationSequence[0]
    assert (algorithm.AlgorithmName, algorithm.AlgorithmVersion) == (metadata["name"], metadata["version"])
    assert [s.SegmentLabel for s in seg.SegmentSequence] == [
        "necrotic and non-enhancing tumour core", "peritumoural oedema", "enhancing tumour"]
