"""BraTS 2020 study code: the dataset layout, the volume pipeline and the demo-data builder.

Configs reach this package as ``scripts.<module>`` (MONAI puts the bundle root on ``sys.path`` before ``run``);
modules import each other relatively and generic code from ``shared``.
"""
