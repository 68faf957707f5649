"""Networks shared by the bundles."""

from shared.networks.flexible_unet import ExportableFlexibleUNet, ZeroPadShortcut, make_shortcuts_exportable

__all__ = ["ExportableFlexibleUNet", "ZeroPadShortcut", "make_shortcuts_exportable"]
