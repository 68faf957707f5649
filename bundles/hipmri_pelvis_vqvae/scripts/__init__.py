"""HipMRI study code: the keras_slices layout, the slice pipeline, the VQ-VAE preset and its loss, the codebook usage,
the code prior (MONAI's DecoderOnlyTransformer), slice-batched reconstruction, sampling with its measurements, and the
demo builder.

Configs reach this package as ``scripts.<module>`` (MONAI puts the bundle root on ``sys.path`` before ``run``);
modules import each other relatively and generic code from ``shared``.
"""
