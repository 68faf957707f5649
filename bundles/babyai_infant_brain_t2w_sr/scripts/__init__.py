"""BABY-AI study code: the BIDS layout of the open baby brains, the thick-slice simulation of the study's training,
and the demo builder. The study's network (with its presets) and its evaluation report live in ``shared``.

Configs reach this package as ``scripts.<module>`` (MONAI puts the bundle root on ``sys.path`` before ``run``);
modules import each other relatively and generic code from ``shared``.
"""
