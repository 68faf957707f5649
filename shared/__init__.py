"""Generic code shared by this repository's MONAI bundles, in one-way layers (a module imports only from its own
layer or the layers below it; ``tests/test_layout.py`` enforces this):

1. ``networks``, ``transforms``: torch / MONAI / ITK building blocks;
2. ``data``: input checks, splits, datasets, the demo-data cache and weights-file integrity;
3. ``engines``, ``handlers``, ``metrics``, ``writers``: running workflows, training state, reports, outputs;
4. ``hub``, ``publish``: published weights and publishing, imported by nothing below them.

Study-specific code lives in each bundle's ``scripts/``. Packages re-export nothing: import from the module.
"""
