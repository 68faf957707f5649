"""I-SPY2 study code: layouts (NIfTI and the study's pickles), the VAE checkpoint naming, the with/without comparison
and its 5-fold cross-validation, and the demo builder. The pipelines are transform lists in the configs; the
multimodal VAE, its loss and augmentation engine, the per-patient Dice and the study's slice inferer live in
``shared``.

Configs reach this package as ``scripts.<module>`` (MONAI puts the bundle root on ``sys.path`` before ``run``);
modules import each other relatively and generic code from ``shared``.
"""
