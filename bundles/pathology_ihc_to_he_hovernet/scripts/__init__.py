"""Pathology study code: the BCI and PanNuke layouts, the HoVer-Net stages and the transforms their pipelines need
beyond MONAI's, the IHC/H&E pair checks, the nuclei-count comparison and the demo builders. The chained inference,
slide reading, nuclei outputs and reports live in ``shared``.

Configs reach this package as ``scripts.<module>`` (MONAI puts the bundle root on ``sys.path`` before ``run``);
modules import each other relatively and generic code from ``shared``.
"""
