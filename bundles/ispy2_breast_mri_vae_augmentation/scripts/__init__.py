"""I-SPY2 study code: layouts (NIfTI and the study's pickles), the slice pipeline, the multimodal VAE with its loss,
augmentation and sampling, the per-patient Dice, the study's slice inferer, the with/without comparison and the demo.

Configs reach this package as ``scripts.<module>`` (MONAI puts the bundle root on ``sys.path`` before ``run``);
modules import each other relatively and generic code from ``shared``.
"""
