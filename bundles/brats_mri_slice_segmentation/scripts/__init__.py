"""BraTS 2020 study code: the dataset layout and the demo-data builder (the volume pipeline is a transform list in the
configs).

Configs reach this package as ``scripts.<module>`` (MONAI puts the bundle root on ``sys.path`` before ``run``);
modules import each other relatively and generic code from ``shared``.
"""
