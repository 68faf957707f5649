"""Networks shared by the bundles."""

from shared.networks.flexible_unet import ExportableFlexibleUNet, ZeroPadShortcut, make_shortcuts_exportable
from shared.networks.multimodal_vae import MultimodalVAE, gaussian_kl, ispy2_multimodal_vae

__all__ = [
    "ExportableFlexibleUNet",
    "ZeroPadShortcut",
    "make_shortcuts_exportable",
    "MultimodalVAE",
    "gaussian_kl",
    "ispy2_multimodal_vae",
]
