"""HipMRI study code: the keras_slices layout, the study's transforms, the VQ-VAE and prior presets, sampling with its
measurements, and the demo builder. The generic blocks these use (the VQ-VAE loss, codebook usage and restarts, the
windowed code prior and its inferer, slice-batched reconstruction) live in ``shared``.

Configs reach this package as ``scripts.<module>`` (MONAI puts the bundle root on ``sys.path`` before ``run``);
modules import each other relatively and generic code from ``shared``.
"""
