"""The BraTS bundle's ``dicom_loading`` row alone: one demo case as a 4-series DICOM study (every slice a file, the
series mixed in one folder), found and loaded by ``inference.json``, against the same case's NIfTI files.

    python -m benchmarks.dicom_loading [--quick] [--repeats 3]

Full size is the bundle's 1 mm demo (240x240x155, 620 files); ``--quick`` the 3 mm one (80x80x52, 208 files). The
row is also in ``python -m benchmarks --bundle brats_mri_slice_segmentation``.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from benchmarks.bundles.brats import NAME, dicom_loading_row
from benchmarks.harness import machine, markdown


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="the 3 mm demo case")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="dicom_loading_") as work:
        row = dicom_loading_row(args.quick, args.repeats, Path(work))
    command = "python -m benchmarks.dicom_loading" + (" --quick" if args.quick else "")
    print(markdown(NAME, [row], machine(), command))


if __name__ == "__main__":
    main()
